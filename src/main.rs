//! The `edgehead` binary: the command line of [`edgehead::cli`].

fn main() -> std::process::ExitCode {
    edgehead::cli::main()
}
