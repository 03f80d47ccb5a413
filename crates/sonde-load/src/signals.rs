//! Ctrl-C and SIGTERM, one way for every command.

use tokio::signal::unix::{SignalKind, signal};

/// Runs `first` on the first Ctrl-C (SIGINT) or SIGTERM, on a thread of its own; a second one
/// ends the process at once with exit code 130. The handlers are in place when this returns,
/// so a signal right after is never lost to the default action.
pub(crate) fn on_interrupt(first: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("sonde-load-signals".to_owned())
        .spawn(move || {
            rt.block_on(async {
                let mut first = Some(first);
                loop {
                    let heard = tokio::select! {
                        r = int.recv() => r.is_some(),
                        r = term.recv() => r.is_some(),
                    };
                    if !heard {
                        return;
                    }
                    match first.take() {
                        Some(f) => f(),
                        None => std::process::exit(130),
                    }
                }
            });
        })
        .map(drop)
}
