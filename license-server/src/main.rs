//! `license-server`: runs the reference licensing API on `127.0.0.1` for the demo, until the
//! process is killed (TERM or INT; it keeps no state on disk besides the optional port file).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use license_server::{Credential, LicenseServer};

const USAGE: &str = "usage: license-server [--auth-token TOKEN]... [--api-key KEY]... \
                     [--port-file PATH]\n\
                     Serves the LocalStack licensing API on http://127.0.0.1:<ephemeral port>/v1 \
                     until killed.\nAt least one --auth-token or --api-key is required.";

/// The command line as typed.
struct Args {
    credentials: Vec<Credential>,
    port_file: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        credentials: Vec::new(),
        port_file: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--auth-token" => parsed.credentials.push(Credential::auth_token(&value()?)),
            "--api-key" => parsed.credentials.push(Credential::api_key(&value()?)),
            "--port-file" => parsed.port_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if parsed.credentials.is_empty() {
        return Err("give at least one --auth-token or --api-key".to_string());
    }
    Ok(parsed)
}

/// Writes the port next to `path` first, then renames, so a reader never sees a partial file.
fn write_port_file(path: &PathBuf, port: u16) -> std::io::Result<()> {
    let mut temp = path.clone().into_os_string();
    temp.push(".tmp");
    std::fs::write(&temp, format!("{port}\n"))?;
    std::fs::rename(&temp, path)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) if problem.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("license-server: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let server = match LicenseServer::start() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("license-server: failed to listen on 127.0.0.1: {error}");
            return ExitCode::FAILURE;
        }
    };
    for credential in args.credentials {
        server.add_credential(credential);
    }
    server.set_request_log(true);

    if let Some(path) = &args.port_file
        && let Err(error) = write_port_file(path, server.port())
    {
        eprintln!(
            "license-server: failed to write port file {}: {error}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "license-server listening on {}", server.url());
    let _ = stdout.flush();

    // Serve until killed: stdin is no signal, since a background job's stdin is /dev/null.
    loop {
        std::thread::park();
    }
}
