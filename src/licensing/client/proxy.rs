//! Whether and how the licensing request goes through a proxy (SPEC 2, 3.5): the proxy setting
//! chosen by the configuration, `no_proxy` matching, and loopback never being proxied.
//!
//! ureq reads its own proxy variables with other rules (`HTTP_PROXY` included, `no_proxy` matched
//! differently), so the proxy is always set explicitly, `None` included, and never taken from
//! ureq's environment reading.
//!
//! Not owned here: the CONNECT exchange itself (ureq's connector) and the classification of its
//! failures (`client.rs`).

use std::net::IpAddr;

use crate::config::{ProxySetting, Settings};

use super::{RequestError, explicit_port};

/// A proxy in use, with what messages may show of it.
#[derive(Clone)]
pub struct ChosenProxy {
    pub proxy: ureq::Proxy,
    /// The variable and URL with the password masked, e.g. `https_proxy=http://u:****@p:3128`.
    pub shown: String,
    pub variable: &'static str,
    /// The URL carries a user name or password, sent to the proxy.
    pub has_credentials: bool,
}

/// The proxy for `host`, or `None` when there is none, `host` is loopback or `no_proxy` lists it.
pub fn choose(settings: &Settings, host: &str) -> Result<Option<ChosenProxy>, RequestError> {
    let Some(setting) = &settings.proxy else {
        return Ok(None);
    };
    if is_loopback(host) {
        log::debug!("{host} is loopback, thus not using the proxy {setting:?}");
        return Ok(None);
    }
    if bypasses_proxy(host, &settings.no_proxy) {
        log::debug!("{host} matches no_proxy, thus not using the proxy {setting:?}");
        return Ok(None);
    }
    let proxy = build(setting)?;
    log::debug!("using the proxy {setting:?} for {host}");
    Ok(Some(ChosenProxy {
        has_credentials: proxy.username().is_some() || proxy.password().is_some(),
        proxy,
        shown: format!("{setting:?}"),
        variable: setting.variable,
    }))
}

/// Only HTTP `CONNECT` proxies (`http://` or `https://`, the scheme defaulting to `http`).
fn build(setting: &ProxySetting) -> Result<ureq::Proxy, RequestError> {
    let invalid = |why: &str| {
        RequestError::Settings(format!(
            "{}={} {why}; give it as http://host:port (with user:password@ if the proxy wants \
             credentials)",
            setting.variable,
            setting.redacted()
        ))
    };
    let scheme = setting
        .url
        .expose()
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        None | Some("http") | Some("https") => {}
        // ureq would connect directly instead of failing: refuse rather than bypass the proxy.
        Some(other) => {
            return Err(invalid(&format!(
                "is a {other} proxy, which is not supported"
            )));
        }
    }
    let proxy =
        ureq::Proxy::new(setting.url.expose()).map_err(|_| invalid("is not a proxy URL"))?;
    if proxy.host().is_empty() {
        return Err(invalid("has no host"));
    }
    let authority = proxy.uri().authority().map_or("", |a| a.as_str());
    if let Err(port) = explicit_port(authority) {
        // ureq would connect to port 80 (or 443) instead.
        return Err(invalid(&format!(
            "has the port {port:?}, which is no TCP port (1 to 65535)"
        )));
    }
    Ok(proxy)
}

/// Loopback hosts: 127.0.0.0/8, `::1`, `localhost`.
pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// SPEC 2's `no_proxy` matching: `*`, names (also their subdomains, with a leading `.` or `*.`
/// or none), IP addresses and CIDR ranges; ports are ignored.
fn bypasses_proxy(host: &str, no_proxy: &[String]) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let entry = strip_port(&entry);
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                _ => false,
            };
        }
        if let Ok(entry_ip) = entry.parse::<IpAddr>() {
            return host_ip == Some(entry_ip);
        }
        let name = entry
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => entry,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    // An IPv4-mapped IPv6 address is matched as the IPv4 address it is.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let env = Environment::from_vars(vars.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        Settings::from_environment(env).unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "api.localstack.cloud", "localhost.evil.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn no_proxy_names_and_subdomains() {
        let host = "api.localstack.cloud";
        for entry in [
            "localstack.cloud",
            ".localstack.cloud",
            "*.localstack.cloud",
            "LocalStack.Cloud",
            " other , localstack.cloud ",
            "localstack.cloud:443",
            "api.localstack.cloud",
            "*",
        ] {
            assert!(bypasses_proxy(host, &list(entry)), "{entry}");
        }
        for entry in ["notlocalstack.cloud", "cloud.localstack", "", ".", "api"] {
            assert!(!bypasses_proxy(host, &list(entry)), "{entry}");
        }
        assert!(!bypasses_proxy(
            "notlocalstack.cloud",
            &list("localstack.cloud")
        ));
        assert!(bypasses_proxy(
            "localstack.cloud",
            &list(".localstack.cloud")
        ));
    }

    #[test]
    fn no_proxy_addresses_and_ranges() {
        assert!(bypasses_proxy("10.1.2.3", &list("10.0.0.0/8")));
        assert!(!bypasses_proxy("11.1.2.3", &list("10.0.0.0/8")));
        assert!(bypasses_proxy("10.1.2.3", &list("10.1.2.3")));
        assert!(bypasses_proxy("10.1.2.3", &list("10.1.2.3:8080")));
        assert!(!bypasses_proxy("10.1.2.4", &list("10.1.2.3")));
        assert!(bypasses_proxy("10.1.2.3", &list("0.0.0.0/0")));
        assert!(bypasses_proxy("192.0.2.7", &list("192.0.2.7/32")));
        assert!(!bypasses_proxy("192.0.2.8", &list("192.0.2.7/32")));
        assert!(bypasses_proxy("fd00::1", &list("fd00::/8")));
        assert!(bypasses_proxy("[fd00::1]", &list("[fd00::1]:443")));
        assert!(!bypasses_proxy("fe80::1", &list("fd00::/8")));
        assert!(bypasses_proxy("::ffff:10.0.0.1", &list("10.0.0.0/8")));
        assert!(!bypasses_proxy("10.1.2.3", &list("10.0.0.0/33")));
        assert!(!bypasses_proxy("licensing.test", &list("10.0.0.0/8")));
    }

    #[test]
    fn proxy_choice_follows_the_settings() {
        let chosen = |vars: &[(&str, &str)], host: &str| {
            choose(&settings(vars), host)
                .map(|p| p.map(|p| p.shown))
                .map_err(|e| e.to_string())
        };
        let proxied = [
            ("https_proxy", "http://user:proxy-secret-pw@127.0.0.1:3128"),
            ("no_proxy", "internal.test"),
        ];
        assert_eq!(
            chosen(&proxied, "licensing.test").unwrap().as_deref(),
            Some("https_proxy=http://user:****@127.0.0.1:3128")
        );
        assert_eq!(chosen(&proxied, "a.internal.test").unwrap(), None);
        assert_eq!(chosen(&proxied, "127.0.0.1").unwrap(), None);
        assert_eq!(chosen(&proxied, "localhost").unwrap(), None);
        assert_eq!(chosen(&[], "licensing.test").unwrap(), None);

        let socks = chosen(&[("ALL_PROXY", "socks5://p:1080")], "licensing.test").unwrap_err();
        assert!(
            socks.contains("ALL_PROXY=socks5://p:1080 is a socks5 proxy"),
            "{socks}"
        );
        let bad = chosen(&[("https_proxy", "http://u:pw@[::1")], "licensing.test").unwrap_err();
        assert!(
            bad.contains("is not a proxy URL") && !bad.contains(":pw@"),
            "{bad}"
        );
    }
}
