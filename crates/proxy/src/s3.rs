//! A small S3 client: the five object requests the shared cache needs
//! (GET with a range, HEAD, PUT, DELETE, ListObjectsV2), signed with AWS
//! Signature Version 4, path-style or virtual-hosted.
//!
//! Layer: adapter (network I/O). Written here on the project's reqwest and
//! ring rather than taken from an S3 crate because the well-kept ones bring
//! a second HTTP stack and a C crypto build for five requests. Payloads are
//! sent as `UNSIGNED-PAYLOAD` (blobs are verified by digest anyway); the
//! secret key is used only to sign and never appears in errors or logs.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use ring::hmac;

/// Where the bucket is and how to sign for it.
#[derive(Clone)]
pub struct S3Settings {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`.
    pub endpoint: Url,
    pub bucket: String,
    pub region: String,
    /// `bucket.endpoint` instead of `endpoint/bucket`.
    pub virtual_host: bool,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("virtual_host", &self.virtual_host)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 {op}: {message}")]
    Transport { op: String, message: String },
    #[error("S3 {op}: answered {status}{detail}")]
    Status {
        op: String,
        status: u16,
        detail: String,
    },
    #[error("S3 {op}: {message}")]
    Invalid { op: String, message: String },
}

/// An object's size and last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

pub struct S3Client {
    http: reqwest::Client,
    settings: S3Settings,
}

const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

impl S3Client {
    pub fn new(settings: S3Settings, http: reqwest::Client) -> S3Client {
        S3Client { http, settings }
    }

    /// URL, `Host` and canonical URI of `key` (or of the bucket).
    fn locate(&self, key: Option<&str>) -> Result<(Url, String, String), S3Error> {
        let endpoint = &self.settings.endpoint;
        let mut host = endpoint.host_str().unwrap_or_default().to_string();
        if self.settings.virtual_host {
            host = format!("{}.{host}", self.settings.bucket);
        }
        if let Some(port) = endpoint.port() {
            host = format!("{host}:{port}");
        }
        let mut path = endpoint.path().trim_end_matches('/').to_string();
        if !self.settings.virtual_host {
            path.push('/');
            path.push_str(&encode(&self.settings.bucket, false));
        }
        path.push('/');
        if let Some(key) = key {
            path.push_str(&encode(key, true));
        }
        let url = Url::parse(&format!("{}://{host}{path}", endpoint.scheme())).map_err(|e| {
            S3Error::Invalid {
                op: "address".into(),
                message: e.to_string(),
            }
        })?;
        Ok((url, host, path))
    }

    /// Sends a signed request; `query` pairs are signed too.
    async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        range: Option<String>,
        body: Option<(reqwest::Body, u64)>,
        op: &str,
    ) -> Result<reqwest::Response, S3Error> {
        let (mut url, host, canonical_uri) = self.locate(key)?;
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (encode(k, false), encode(v, false)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        if !canonical_query.is_empty() {
            url.set_query(Some(&canonical_query));
        }
        let now = SystemTime::now();
        let mut headers = vec![("host", host)];
        if let Some(range) = &range {
            headers.push(("range", range.clone()));
        }
        headers.push(("x-amz-content-sha256", UNSIGNED.to_string()));
        headers.push(("x-amz-date", amz_date(now)));
        let authorization = self.authorization(
            method.as_str(),
            &canonical_uri,
            &canonical_query,
            &headers,
            UNSIGNED,
            now,
        );
        let mut request = self.http.request(method, url);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            request = request.header(*name, value);
        }
        let mut auth = reqwest::header::HeaderValue::from_str(&authorization).map_err(|_| {
            S3Error::Invalid {
                op: op.into(),
                message: "credentials contain invalid characters".into(),
            }
        })?;
        auth.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, auth);
        if let Some((body, length)) = body {
            request = request
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(body);
        }
        request.send().await.map_err(|e| S3Error::Transport {
            op: op.into(),
            message: e.without_url().to_string(),
        })
    }

    /// The `Authorization` header of Signature Version 4.
    fn authorization(
        &self,
        method: &str,
        canonical_uri: &str,
        canonical_query: &str,
        headers: &[(&str, String)],
        payload_hash: &str,
        now: SystemTime,
    ) -> String {
        let date_time = amz_date(now);
        let date = &date_time[..8];
        let mut sorted: Vec<&(&str, String)> = headers.iter().collect();
        sorted.sort_by_key(|(name, _)| *name);
        let canonical_headers: String = sorted
            .iter()
            .map(|(name, value)| format!("{name}:{}\n", value.trim()))
            .collect();
        let signed_headers = sorted
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.settings.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            hex(ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes()).as_ref())
        );
        let mut key = format!("AWS4{}", self.settings.secret_key).into_bytes();
        for part in [date, self.settings.region.as_str(), "s3", "aws4_request"] {
            key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
                .as_ref()
                .to_vec();
        }
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key),
            string_to_sign.as_bytes(),
        );
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
            self.settings.access_key,
            hex(signature.as_ref())
        )
    }

    async fn fail(op: &str, response: reqwest::Response) -> S3Error {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let detail = xml_values(&body, "Code")
            .into_iter()
            .next()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        S3Error::Status {
            op: op.into(),
            status,
            detail,
        }
    }

    /// An object's bytes (`range`: `start..end`), `None` when absent.
    pub async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<reqwest::Response>, S3Error> {
        let op = format!("GET {key}");
        let range = range.map(|(start, end)| format!("bytes={start}-{}", end - 1));
        let response = self
            .send(Method::GET, Some(key), &[], range, None, &op)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response)),
            _ => Err(Self::fail(&op, response).await),
        }
    }

    /// A small object whole, with its modification time.
    pub async fn get_small(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Bytes, SystemTime)>, S3Error> {
        let Some(response) = self.get(key, None).await? else {
            return Ok(None);
        };
        let modified = last_modified(response.headers());
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(S3Error::Invalid {
                op: format!("GET {key}"),
                message: format!("larger than {limit} bytes"),
            });
        }
        let bytes = response.bytes().await.map_err(|e| S3Error::Transport {
            op: format!("GET {key}"),
            message: e.without_url().to_string(),
        })?;
        Ok(Some((bytes, modified)))
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let op = format!("HEAD {key}");
        let response = self
            .send(Method::HEAD, Some(key), &[], None, None, &op)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                // The header: reqwest's content_length() is the body's, 0 for HEAD.
                size: detour_registry::client::header_length(response.headers()).ok_or_else(
                    || S3Error::Invalid {
                        op: op.clone(),
                        message: "no Content-Length".into(),
                    },
                )?,
                modified: last_modified(response.headers()),
            })),
            _ => Err(Self::fail(&op, response).await),
        }
    }

    /// Stores an object; `length` is sent as `Content-Length`, which S3
    /// requires even for a streamed body.
    pub async fn put(&self, key: &str, body: reqwest::Body, length: u64) -> Result<(), S3Error> {
        let op = format!("PUT {key}");
        let response = self
            .send(Method::PUT, Some(key), &[], None, Some((body, length)), &op)
            .await?;
        if !response.status().is_success() {
            return Err(Self::fail(&op, response).await);
        }
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let op = format!("DELETE {key}");
        let response = self
            .send(Method::DELETE, Some(key), &[], None, None, &op)
            .await?;
        if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
            return Err(Self::fail(&op, response).await);
        }
        Ok(())
    }

    /// Every object under `prefix` (ListObjectsV2, page by page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let op = format!("LIST {prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let response = self
                .send(Method::GET, None, &query, None, None, &op)
                .await?;
            if !response.status().is_success() {
                return Err(Self::fail(&op, response).await);
            }
            let body = response.text().await.map_err(|e| S3Error::Transport {
                op: op.clone(),
                message: e.without_url().to_string(),
            })?;
            for contents in xml_values(&body, "Contents") {
                let field = |name| xml_values(&contents, name).into_iter().next();
                let (Some(key), Some(size)) = (field("Key"), field("Size")) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: unescape_xml(&key),
                    size: size.parse().unwrap_or(0),
                    modified: field("LastModified")
                        .and_then(|t| parse_iso8601(&t))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
            let truncated =
                xml_values(&body, "IsTruncated").first().map(String::as_str) == Some("true");
            token = xml_values(&body, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }
}

/// URI encoding as Signature Version 4 wants it: unreserved characters
/// kept, everything else `%XX`; `/` kept in object keys.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `20130524T000000Z`.
fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-03T04:40:00.000Z` (ListObjectsV2's LastModified).
fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let days = days_from_civil(num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + (num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?) as i64;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `Last-Modified` (an HTTP date), or now when absent or unreadable.
fn last_modified(headers: &reqwest::header::HeaderMap) -> SystemTime {
    headers
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or_else(SystemTime::now)
}

/// `Wed, 21 Oct 2015 07:28:00 GMT`.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, _] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    parse_iso8601(&format!("{year}-{month:02}-{:0>2}T{time}", day))
}

/// The text of every `<tag>…</tag>` element (no nesting of the same tag).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(virtual_host: bool) -> S3Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        S3Client::new(
            S3Settings {
                endpoint: Url::parse("https://s3.amazonaws.com").unwrap(),
                bucket: "examplebucket".into(),
                region: "us-east-1".into(),
                virtual_host,
                access_key: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            },
            reqwest::Client::builder().build().unwrap(),
        )
    }

    /// The GET Object example of the Signature Version 4 documentation.
    #[test]
    fn signs_like_the_documented_example() {
        let s3 = client(true);
        let (url, host, uri) = s3.locate(Some("test.txt")).unwrap();
        assert_eq!(
            url.as_str(),
            "https://examplebucket.s3.amazonaws.com/test.txt"
        );
        let when = parse_iso8601("2013-05-24T00:00:00Z").unwrap();
        assert_eq!(amz_date(when), "20130524T000000Z");
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let headers = vec![
            ("host", host),
            ("range", "bytes=0-9".to_string()),
            ("x-amz-content-sha256", empty.to_string()),
            ("x-amz-date", amz_date(when)),
        ];
        let auth = s3.authorization("GET", &uri, "", &headers, empty, when);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn path_style_keys_are_encoded_once() {
        let s3 = client(false);
        let (url, host, uri) = s3.locate(Some("tags/127.0.0.1:5000/a b/_tags/v1")).unwrap();
        assert_eq!(host, "s3.amazonaws.com");
        assert_eq!(uri, "/examplebucket/tags/127.0.0.1%3A5000/a%20b/_tags/v1");
        assert_eq!(url.path(), uri);
    }

    #[test]
    fn dates() {
        let t = parse_iso8601("2026-12-03T04:40:05.123Z").unwrap();
        assert_eq!(amz_date(t), "20261203T044005Z");
        assert_eq!(
            parse_http_date("Thu, 03 Dec 2026 04:40:05 GMT"),
            Some(t - Duration::from_millis(0))
        );
        assert_eq!(parse_http_date("Thu, 3 Dec 2026 04:40:05 GMT"), Some(t));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn list_answers() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>blobs/sha256/ab&amp;c</Key><LastModified>2026-12-03T04:40:05.000Z</LastModified><Size>12</Size></Contents><Contents><Key>x</Key><Size>1</Size></Contents></ListBucketResult>";
        let contents = xml_values(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(
            unescape_xml(&xml_values(&contents[0], "Key")[0]),
            "blobs/sha256/ab&c"
        );
        assert_eq!(xml_values(xml, "IsTruncated"), ["false"]);
    }
}
