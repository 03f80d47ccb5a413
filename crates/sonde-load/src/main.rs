//! `sonde-load`: see the crate documentation of `sonde_load` and `sonde-load --help`.

fn main() -> std::process::ExitCode {
    sonde_load::cli::main()
}
