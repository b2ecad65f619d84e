//! The command line (SPEC 7): `lsinit [check | --help | --version]` or
//! `lsinit [--] COMMAND ARGS…`. Owns only the grammar; the emulator's default command is
//! decided with the settings.

use std::ffi::OsString;
use std::fmt;

/// What lsinit was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Activate, then start and supervise the emulator (the given command, or the default).
    Start {
        command: Vec<OsString>,
    },
    /// Activate as a start would, print the outcome, exit 0 or 55.
    Check,
    Help,
    Version,
}

/// A command line lsinit does not understand (exit 2).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; see lsinit --help", self.0)
    }
}

pub const USAGE: &str = "\
lsinit: the LocalStack Pro container's entrypoint

usage:
  lsinit [--] [COMMAND ARGS...]   activate the license, then start and supervise COMMAND
                                  (default: $LOCALSTACK_SUPERVISOR_COMMAND, else the runtime)
  lsinit check                    activate as a start would, print the outcome, exit 0 or 55
  lsinit --help | --version

Settings come from the environment; see README.md.";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let Some(first) = args.first().and_then(|a| a.to_str()).map(str::to_string) else {
        return Ok(Invocation::Start { command: args });
    };
    match first.as_str() {
        "check" | "--help" | "--version" if args.len() > 1 => {
            Err(UsageError(format!("{first} takes no arguments")))
        }
        "check" => Ok(Invocation::Check),
        "--help" => Ok(Invocation::Help),
        "--version" => Ok(Invocation::Version),
        "--" => {
            args.remove(0);
            Ok(Invocation::Start { command: args })
        }
        option if option.starts_with('-') => Err(UsageError(format!(
            "unknown option {option:?}; put -- before a command that starts with -"
        ))),
        _ => Ok(Invocation::Start { command: args }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn start(args: &[&str]) -> Invocation {
        Invocation::Start {
            command: args.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn grammar() {
        assert_eq!(parse_strs(&[]), Ok(start(&[])));
        assert_eq!(parse_strs(&["check"]), Ok(Invocation::Check));
        assert_eq!(parse_strs(&["--version"]), Ok(Invocation::Version));
        assert_eq!(parse_strs(&["--", "check"]), Ok(start(&["check"])));
        assert_eq!(parse_strs(&["--", "-x"]), Ok(start(&["-x"])));
        assert_eq!(
            parse_strs(&["sleep", "--help"]),
            Ok(start(&["sleep", "--help"]))
        );
        assert!(parse_strs(&["-x"]).is_err());
        assert!(parse_strs(&["check", "now"]).is_err());
    }
}
