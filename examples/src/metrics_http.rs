//! A plain HTTP responder for a Prometheus `/metrics` endpoint.
//!
//! One endpoint that answers `GET` with a text body needs no HTTP crate: std's
//! `TcpListener`, a request line and a `Content-Length`. Requests are served
//! one at a time on one thread (a scraper asks every few seconds), each read
//! with a timeout so that a silent client cannot hold the endpoint.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read; the rest of a longer one is ignored.
const MAX_HEAD: usize = 8 << 10;

/// Listens on `addr` and answers `GET /metrics` (and `GET /`) with `render()`
/// as `content_type`, on a thread of its own that lives as long as the
/// process. Returns the address bound (port 0 picks a free port).
///
/// # Errors
/// When the address cannot be bound or the thread cannot be spawned.
pub fn serve(
    addr: SocketAddr,
    content_type: &'static str,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                // A client that fails or times out only loses its own answer.
                let _ = stream.and_then(|s| answer(s, content_type, &render));
            }
        })?;
    Ok(bound)
}

fn answer(
    mut stream: TcpStream,
    content_type: &str,
    render: &dyn Fn() -> String,
) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_HEAD as u64);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line, so that closing the socket does
    // not reset the connection under a client still sending them.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let (status, kind, body) = match route(&request_line) {
        Ok(()) => ("200 OK", content_type, render()),
        Err(status) => (status, "text/plain; charset=utf-8", format!("{status}\n")),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// `Ok` for a request of the metrics, else the status line to answer with.
fn route(request_line: &str) -> Result<(), &'static str> {
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err("400 Bad Request");
    };
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics" | "/") => Ok(()),
        ("GET", _) => Err("404 Not Found"),
        _ => Err("405 Method Not Allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn routes_only_get_of_the_metrics() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\n"), Ok(()));
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n"), Ok(()));
        assert_eq!(route("GET /other HTTP/1.1\r\n"), Err("404 Not Found"));
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n"),
            Err("405 Method Not Allowed")
        );
        assert_eq!(route("\r\n"), Err("400 Bad Request"));
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn answers_with_a_length_and_the_rendered_body() {
        // Its own namespace, whose loopback is up whoever runs the test.
        let _netns = nfqueue_testkit::enter_new_netns();
        let addr = serve((Ipv4Addr::LOCALHOST, 0).into(), "text/x", || {
            "a 1\n".to_string()
        })
        .unwrap();
        let response = get(addr, "/metrics");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("\r\nContent-Type: text/x\r\n"));
        assert!(response.contains("\r\nContent-Length: 4\r\n"));
        assert!(response.ends_with("\r\n\r\na 1\n"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404 Not Found\r\n"));
    }
}
