//! Just enough HTTP/1.1 by hand, at byte level: reading one request from a socket, building
//! responses, and ending a connection with a reset. Hand-written so that `server` can misbehave
//! in ways a framework would hide (trickling, truncating, resetting).
//!
//! Owns no routing and no server state. One request per connection: every response says
//! `Connection: close`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request body accepted; a larger one is answered 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Largest request line plus headers accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A request as read from the socket. Header names are lowercase; a chunked body is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed, went silent or the socket failed before a full request arrived;
    /// there is no one to answer.
    Closed,
    /// Not HTTP/1.x as this server understands it; the text says what.
    Malformed(&'static str),
    /// The body is larger than [`MAX_BODY`].
    TooLarge,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Closed
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
enum Parse {
    /// More bytes are needed; `expects_continue` once the head is complete and asks for a
    /// `100 Continue` before the body.
    Incomplete {
        expects_continue: bool,
    },
    /// A full request of `len` bytes.
    Complete {
        len: usize,
        request: Request,
    },
    Malformed(&'static str),
    TooLarge,
}

/// Reads one request. Bytes a client sends after it are read and dropped (one request per
/// connection).
pub fn read_request(stream: &mut TcpStream) -> Result<Request, ReadError> {
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent_continue = false;
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        received.extend_from_slice(&chunk[..read]);
        match parse(&received) {
            Parse::Complete { request, .. } => return Ok(request),
            Parse::Incomplete { expects_continue } => {
                if expects_continue && !sent_continue {
                    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                    sent_continue = true;
                }
            }
            Parse::Malformed(what) => return Err(ReadError::Malformed(what)),
            Parse::TooLarge => return Err(ReadError::TooLarge),
        }
    }
}

/// Closes with RST instead of FIN: `SO_LINGER` with a zero timeout makes the kernel discard
/// what is unsent and reset the connection. (`TcpStream::set_linger` is unstable, hence libc.)
pub fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `stream` owns a valid socket descriptor for the whole call, and the option value
    // points to a live `linger` of exactly the length given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn parse(buf: &[u8]) -> Parse {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|at| at + 4) else {
        return if buf.len() > MAX_HEAD {
            Parse::Malformed("request head larger than 64 KiB")
        } else {
            Parse::Incomplete {
                expects_continue: false,
            }
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_len - 4]) else {
        return Parse::Malformed("request head is not UTF-8");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Malformed("request line is not `METHOD PATH VERSION`");
    };
    if method.is_empty() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Parse::Malformed("request line is not `METHOD /PATH HTTP/1.x`");
    }

    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Malformed("header line without `:`");
        };
        if name.is_empty() || name.ends_with(' ') {
            return Parse::Malformed("header name is empty or followed by a space");
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let expects_continue = header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let chunked = header("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .unwrap_or(v)
            .trim()
            .eq_ignore_ascii_case("chunked")
    });

    let body_and_len = if chunked {
        match parse_chunked(&buf[head_len..]) {
            Chunked::Complete { len, body } => (body, head_len + len),
            Chunked::Incomplete => return Parse::Incomplete { expects_continue },
            Chunked::Malformed => return Parse::Malformed("bad chunked body"),
            Chunked::TooLarge => return Parse::TooLarge,
        }
    } else {
        let mut lengths = headers.iter().filter(|(n, _)| n == "content-length");
        let length = match lengths.next() {
            None => 0,
            Some((_, value)) => match value.parse::<usize>() {
                Ok(length) => length,
                Err(_) => return Parse::Malformed("Content-Length is not a number"),
            },
        };
        if lengths.any(|(_, other)| other.parse::<usize>() != Ok(length)) {
            return Parse::Malformed("conflicting Content-Length headers");
        }
        if length > MAX_BODY {
            return Parse::TooLarge;
        }
        if buf.len() < head_len + length {
            return Parse::Incomplete { expects_continue };
        }
        (buf[head_len..head_len + length].to_vec(), head_len + length)
    };
    let (body, len) = body_and_len;
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body,
    };
    Parse::Complete { len, request }
}

enum Chunked {
    Complete { len: usize, body: Vec<u8> },
    Incomplete,
    Malformed,
    TooLarge,
}

/// Decodes a chunked body from the start of `buf`; `len` is how many bytes it spans.
fn parse_chunked(buf: &[u8]) -> Chunked {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n").map(|i| at + i) else {
            return Chunked::Incomplete;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap_or("!");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Chunked::Malformed;
        };
        at = line_end + 2;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(line_end) = find(&buf[at..], b"\r\n").map(|i| at + i) else {
                    return Chunked::Incomplete;
                };
                let empty = line_end == at;
                at = line_end + 2;
                if empty {
                    return Chunked::Complete { len: at, body };
                }
            }
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Chunked::TooLarge;
        }
        if buf.len() < at + size + 2 {
            return Chunked::Incomplete;
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Chunked::Malformed;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A response to write. [`Response::head`] adds `Content-Type`, `Content-Length` and
/// `Connection: close` unless `headers` already has them, so a fault can lie about any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    /// Status line and headers, ending with the empty line. `content_length` is what the
    /// header announces when the response does not set its own.
    pub fn head(&self, content_length: usize) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("content-type") {
            head.push_str("Content-Type: application/json\r\n");
        }
        if !has("content-length") {
            head.push_str(&format!("Content-Length: {content_length}\r\n"));
        }
        if !has("connection") {
            head.push_str("Connection: close\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// The whole response as sent when nothing goes wrong.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.head(self.body.len());
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Stops an accept loop that has been told to stop: `accept` has no timeout, so a connection
/// of our own wakes it to see that, then the thread is joined.
///
/// LIMITATION: if the wake-up connection fails, the accept thread is left detached; it holds
/// only the listener and exits at its next connection.
pub(crate) fn stop_acceptor(port: u16, acceptor: Option<JoinHandle<()>>) {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let woken = TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok();
    if let Some(acceptor) = acceptor
        && woken
    {
        let _ = acceptor.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (usize, Request) {
        match parse(raw) {
            Parse::Complete { len, request } => (len, request),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn parses_content_length_body() {
        let raw =
            b"POST /v1/license/request HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 2\r\n\r\n{}";
        let (len, request) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/license/request");
        assert_eq!(request.body, b"{}");
        assert!(
            request
                .headers
                .contains(&("content-type".into(), "application/json".into()))
        );
    }

    #[test]
    fn waits_for_the_whole_body() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nab";
        assert_eq!(
            parse(raw),
            Parse::Incomplete {
                expects_continue: true
            }
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n"),
            Parse::Incomplete {
                expects_continue: false
            }
        );
    }

    #[test]
    fn decodes_chunked_body() {
        let raw =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n\
                    0\r\n\r\n";
        let (len, request) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(request.body, b"{\"a\":1}");
        assert_eq!(
            parse(&raw[..raw.len() - 1]),
            Parse::Incomplete {
                expects_continue: false
            }
        );
    }

    #[test]
    fn refuses_large_and_malformed_requests() {
        let large = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse(large.as_bytes()), Parse::TooLarge);
        assert!(matches!(parse(b"garbage\r\n\r\n"), Parse::Malformed(_)));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Parse::Malformed(_)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parse::Malformed(_)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parse::Malformed(_)
        ));
    }

    #[test]
    fn response_head_defaults_and_overrides() {
        let response = Response::json(429, &serde_json::json!({"message": "slow down"}));
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Length: 23\r\nConnection: close\r\n\r\n{"),
            "{text}"
        );

        let lying = Response {
            status: 200,
            headers: vec![("Content-Length".into(), "99".into())],
            body: b"{}".to_vec(),
        };
        let text = String::from_utf8(lying.to_bytes()).unwrap();
        assert!(text.contains("Content-Length: 99\r\n") && !text.contains("Length: 2\r\n"));
    }
}
