fn main() -> std::process::ExitCode {
    autoround_cpu::cli::main()
}
