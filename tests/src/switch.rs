//! A plain TCP forwarder on loopback that can be switched off and on again at the same
//! address: a receiver outage as its clients see it (connections refused, open ones cut),
//! while the receiver behind it keeps its data.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A forwarder to one upstream; off on drop.
pub struct Switch {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Switch {
    /// Starts forwarding a new loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Switch {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = Switch {
            addr,
            upstream,
            running: None,
            open: Arc::new(Mutex::new(Vec::new())),
        };
        s.on();
        s
    }

    /// Accepts and forwards again, at the same address.
    pub fn on(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = (0..100)
            .find_map(|_| {
                TcpListener::bind(self.addr).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                })
            })
            .expect("the switch's port was taken meanwhile");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, open, upstream) = (stop.clone(), self.open.clone(), self.upstream);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut o = open.lock().unwrap();
                        o.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                        drop(o);
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, thread));
    }

    /// Refuses new connections and cuts the open ones.
    pub fn off(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.off();
    }
}
