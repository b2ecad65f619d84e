//! Any bytes as an environment (NAME=VALUE lines, not necessarily UTF-8) and as a command line:
//! reading never panics, credentials never show in `Debug`, mapping never invents variables.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use lsinit::config::{Environment, Settings};

fuzz_target!(|data: &[u8]| {
    let vars: Vec<(OsString, OsString)> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == b'=')?;
            let (name, value) = (&line[..at], &line[at + 1..]);
            Some((OsString::from_vec(name.to_vec()), OsString::from_vec(value.to_vec())))
        })
        .collect();
    let names: Vec<OsString> = vars.iter().map(|(n, _)| n.clone()).collect();
    if let Ok(settings) = Settings::from_environment(Environment::from_vars(vars.clone())) {
        // The whole Settings may repeat a credential's text through another variable; the
        // credentials themselves must only ever print masked.
        let debug = format!("{:?}", settings.credentials);
        let secrets = [&settings.credentials.auth_token, &settings.credentials.api_key];
        for secret in secrets.into_iter().flatten() {
            if secret.expose().chars().count() >= 8 {
                assert!(!debug.contains(secret.expose()), "credential in Debug output");
            }
        }
        for (name, _) in settings.environment.iter() {
            let mapped = name
                .to_str()
                .map(|n| names.contains(&OsString::from(format!("LOCALSTACK_{n}"))))
                .unwrap_or(false);
            assert!(names.contains(name) || mapped, "mapping invented {name:?}");
        }
    }
    let args = data.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec()));
    let _ = lsinit::cli::parse(args);
});
