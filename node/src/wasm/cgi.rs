//! WAGI's CGI/1.1 mapping (RFC 3875, as deislabs' WAGI applies it): an HTTP request becomes
//! environment variables, a handler's stdout becomes the response.

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::net::SocketAddr;

/// The CGI meta-variables of one request, in a stable order.
///
/// `PATH_INFO` is the whole path (the handler owns every route, as WAGI's `/...`), percent-
/// decoded as CGI asks; `X_RAW_PATH_INFO` keeps it as sent. `SCRIPT_NAME` is empty: the
/// handler sits at the root.
pub fn request_env(parts: &Parts, content_length: usize, local: SocketAddr, remote: SocketAddr) -> Vec<(String, String)> {
    let uri = &parts.uri;
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let host = parts.headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned).unwrap_or_else(|| local.to_string());
    let server_name = host_name(&host);
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let content_type = parts.headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut env: Vec<(String, String)> = [
        ("AUTH_TYPE", String::new()),
        ("CONTENT_LENGTH", content_length.to_string()),
        ("CONTENT_TYPE", content_type.to_owned()),
        ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
        ("PATH_INFO", percent_decode(path)),
        ("PATH_TRANSLATED", percent_decode(path)),
        ("QUERY_STRING", query.to_owned()),
        ("REMOTE_ADDR", remote.ip().to_string()),
        ("REMOTE_HOST", remote.ip().to_string()),
        ("REMOTE_USER", String::new()),
        ("REQUEST_METHOD", parts.method.as_str().to_owned()),
        ("SCRIPT_NAME", String::new()),
        ("SERVER_NAME", server_name.to_owned()),
        ("SERVER_PORT", local.port().to_string()),
        ("SERVER_PROTOCOL", format!("{:?}", parts.version)),
        ("SERVER_SOFTWARE", concat!("wasmkube/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("X_FULL_URL", format!("http://{host}{path_and_query}")),
        ("X_MATCHED_ROUTE", "/...".to_owned()),
        ("X_RAW_PATH_INFO", path.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(header_env(&parts.headers));
    env
}

/// `HTTP_*` variables: one per header name, repeated fields joined with ", " (RFC 3875 4.1.18).
/// Content-Type and Content-Length already have their own variables. A `Proxy` header is
/// dropped: as `HTTP_PROXY` it would pose as the handler's outgoing proxy setting ("httpoxy").
fn header_env(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for name in headers.keys() {
        if name == hyper::header::CONTENT_TYPE || name == hyper::header::CONTENT_LENGTH || name.as_str() == "proxy" {
            continue;
        }
        let values: Vec<String> = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let var = format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_"));
        out.push((var, values.join(", ")));
    }
    out
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `::1`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CGI response, parsed.
#[derive(Debug)]
pub struct CgiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Splits a handler's stdout into CGI header fields and the body.
///
/// `Status: NNN reason` sets the status; `Location` alone gives a 302; every other field is a
/// response header, except the framing ones (Content-Length, Transfer-Encoding, Connection),
/// which the server sets for the body it sends. As WAGI does, a response needs `Content-Type`
/// or `Location`. A field line that does not parse is dropped (WAGI logs and skips it too).
pub fn parse_response(out: Bytes) -> Result<CgiResponse, String> {
    let (head_end, body_start) = match find_blank_line(&out) {
        Some(split) => split,
        None => (out.len(), out.len()),
    };
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let mut status = None;
    let mut location = false;
    let mut content_type = false;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let parsed = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
            status = Some(parsed.ok_or_else(|| format!("invalid Status field {value:?}"))?);
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
            continue;
        };
        if name == hyper::header::CONTENT_LENGTH || name == hyper::header::TRANSFER_ENCODING || name == hyper::header::CONNECTION {
            continue;
        }
        location |= name == hyper::header::LOCATION;
        content_type |= name == hyper::header::CONTENT_TYPE;
        headers.append(name, value);
    }
    if !location && !content_type {
        return Err("the handler's output has neither a Content-Type nor a Location field".to_owned());
    }
    let status = status.unwrap_or(if location { StatusCode::FOUND } else { StatusCode::OK });
    Ok(CgiResponse { status, headers, body: out.slice(body_start..) })
}

/// (end of the header block, start of the body) at the first empty line, `\n\n` or `\r\n\r\n`.
fn find_blank_line(out: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            let line = &out[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = hyper::Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn requests_become_cgi_variables() {
        let p = parts("/a%20b/c?x=1&y=%20", &[("host", "pod.example:8080"), ("content-type", "text/plain"), ("x-multi", "1"), ("x-multi", "2"), ("proxy", "http://evil")]);
        let env = request_env(&p, 5, "127.1.0.7:8080".parse().unwrap(), "127.0.0.1:5555".parse().unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("PATH_INFO"), Some("/a b/c"));
        assert_eq!(get("X_RAW_PATH_INFO"), Some("/a%20b/c"));
        assert_eq!(get("QUERY_STRING"), Some("x=1&y=%20"));
        assert_eq!(get("SERVER_NAME"), Some("pod.example"));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get("CONTENT_LENGTH"), Some("5"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("REMOTE_ADDR"), Some("127.0.0.1"));
        assert_eq!(get("X_FULL_URL"), Some("http://pod.example:8080/a%20b/c?x=1&y=%20"));
        assert_eq!(get("HTTP_HOST"), Some("pod.example:8080"));
        assert_eq!(get("HTTP_X_MULTI"), Some("1, 2"));
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn cgi_output_becomes_a_response() {
        let r = parse_response(Bytes::from_static(b"Content-Type: text/plain\n\nhello\n")).unwrap();
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"hello\n"[..]));
        assert_eq!(r.headers["content-type"], "text/plain");

        let r = parse_response(Bytes::from_static(b"Status: 404 Not Found\r\nContent-Type: text/html\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n<p>no</p>")).unwrap();
        assert_eq!((r.status, &r.body[..]), (StatusCode::NOT_FOUND, &b"<p>no</p>"[..]));
        assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);

        let r = parse_response(Bytes::from_static(b"Content-Type: text/plain\nContent-Length: 99\nConnection: keep-alive\n\nhi")).unwrap();
        assert_eq!((r.headers.len(), &r.body[..]), (1, &b"hi"[..]));

        let r = parse_response(Bytes::from_static(b"Location: /elsewhere\n\n")).unwrap();
        assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (StatusCode::FOUND, "/elsewhere"));

        assert!(parse_response(Bytes::from_static(b"hello world\n")).is_err());
        assert!(parse_response(Bytes::from_static(b"Status: abc\nContent-Type: text/plain\n\n")).is_err());
        assert!(parse_response(Bytes::new()).is_err());
    }
}
