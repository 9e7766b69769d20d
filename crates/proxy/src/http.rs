//! The Distribution API's read side over HTTP, for [`Proxy`].
//!
//! Layer: transport. Authenticates and limits the client, routes the path,
//! calls the service, and writes its answer with the headers that pulling
//! clients (containerd, CRI-O, Docker, skopeo) read; errors in the
//! Distribution API's JSON shape. Push and delete are `UNSUPPORTED`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus_client::metrics::counter::Counter;

use super::clients::{ClientLimit, Htpasswd};
use super::error::ProxyError;
use super::metrics::{ProxyMetrics, RefusalLabels};
use super::route::{RouteError, Target};
use super::service::{BlobAnswer, ByteRange, ManifestAnswer, Proxy, ReferrersAnswer};

const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

pub struct ProxyApp {
    pub proxy: Arc<Proxy>,
    pub htpasswd: Option<Htpasswd>,
    pub limit: ClientLimit,
}

/// Every path is answered by one handler: the Distribution API's paths are
/// not expressible as axum routes (repository names contain slashes).
pub fn router(app: Arc<ProxyApp>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

async fn handle(
    State(app): State<Arc<ProxyApp>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let metrics = &app.proxy.metrics;
    let refuse = |reason: &'static str| {
        metrics
            .refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    };
    if let Some(htpasswd) = &app.htpasswd {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !htpasswd.allows(authorization) {
            refuse("auth");
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"detour\""),
            );
            return response;
        }
    }
    let Some(permit) = app.limit.admit(peer.ip()) else {
        refuse("limit");
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many requests in flight from this client",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let path = uri.path();
    if path == "/v2/" || path == "/v2" {
        return with_api_version(
            ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let query = uri.query();
    let ns = query.and_then(crate::route::ns_param);
    let route = match app.proxy.router.route(host, path, ns.as_deref()) {
        Ok(route) => route,
        Err(e) => {
            refuse("route");
            let status = match e {
                RouteError::NotApi => StatusCode::NOT_FOUND,
                RouteError::UnknownUpstream(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, e.code(), &e.to_string());
        }
    };
    let unsupported = || {
        refuse("unsupported");
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this is a pull-through cache: only pulls (GET and HEAD) are supported",
        )
    };
    if method != Method::GET && method != Method::HEAD {
        return unsupported();
    }
    let head = method == Method::HEAD;
    let proxy = &app.proxy;
    let response = match &route.target {
        Target::Manifest(reference) => {
            match proxy
                .manifest(route.upstream, &route.repository, reference)
                .await
            {
                Ok(answer) => manifest_response(answer, head),
                Err(e) => proxy_error(e, "MANIFEST_UNKNOWN"),
            }
        }
        Target::Blob(digest) if head => {
            match proxy
                .blob_size(route.upstream, &route.repository, digest)
                .await
            {
                Ok(size) => blob_head(digest, size),
                Err(e) => proxy_error(e, "BLOB_UNKNOWN"),
            }
        }
        Target::Blob(digest) => {
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_range);
            match proxy
                .blob(route.upstream, &route.repository, digest, range)
                .await
            {
                Ok(answer) => {
                    let served = metrics
                        .served_bytes
                        .get_or_create(&ProxyMetrics::upstream(proxy.router.host(route.upstream)))
                        .clone();
                    blob_response(digest, answer, served, permit)
                }
                Err(e) => proxy_error(e, "BLOB_UNKNOWN"),
            }
        }
        Target::TagList => match proxy
            .tag_list(route.upstream, &route.repository, query)
            .await
        {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => proxy_error(e, "NAME_UNKNOWN"),
        },
        Target::Referrers(digest) => {
            let artifact_type = query.and_then(|q| crate::route::query_param(q, "artifactType"));
            match proxy
                .referrers(
                    route.upstream,
                    &route.repository,
                    digest,
                    artifact_type.as_deref(),
                )
                .await
            {
                Ok(answer) => referrers_response(answer, head),
                Err(e) => proxy_error(e, "NAME_UNKNOWN"),
            }
        }
        Target::Upload => unsupported(),
    };
    with_api_version(response)
}

fn with_api_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response
}

fn manifest_response(answer: ManifestAnswer, head: bool) -> Response {
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, answer.media_type.as_str())
        .header("docker-content-digest", answer.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", answer.digest))
        .header(header::CONTENT_LENGTH, answer.bytes.len());
    if answer.stale {
        builder = builder.header(header::WARNING, "110 detour \"Response is Stale\"");
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(answer.bytes)
    };
    builder.body(body).unwrap_or_else(|_| internal())
}

/// A referrers list: an OCI index, saying whether it was filtered by
/// artifact type, as the distribution spec has it.
fn referrers_response(answer: ReferrersAnswer, head: bool) -> Response {
    let filtered = answer.filtered;
    let mut response = manifest_response(answer.index, head);
    let headers = response.headers_mut();
    headers.remove("docker-content-digest");
    headers.remove(header::ETAG);
    if filtered {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    response
}

fn blob_head(digest: &str, size: u64) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", digest)
        .header(header::CONTENT_LENGTH, size)
        .header(header::ACCEPT_RANGES, "bytes")
        .body(Body::empty())
        .unwrap_or_else(|_| internal())
}

fn blob_response(
    digest: &str,
    answer: BlobAnswer,
    served: Counter,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Response {
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", digest)
        .header(header::ACCEPT_RANGES, "bytes");
    match (answer.range, answer.size) {
        (Some((start, end)), Some(size)) => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{size}", end - 1),
                )
                .header(header::CONTENT_LENGTH, end - start);
        }
        (_, Some(size)) => builder = builder.header(header::CONTENT_LENGTH, size),
        _ => {}
    }
    // The permit lives as long as the body is being sent.
    let stream = futures_util::stream::unfold(
        (answer.body, served, permit),
        |(mut body, served, permit)| async move {
            let chunk = body.next_chunk().await?;
            if let Ok(bytes) = &chunk {
                served.inc_by(bytes.len() as u64);
            }
            Some((chunk, (body, served, permit)))
        },
    );
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| internal())
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`; anything else (several ranges) is
/// ignored and the whole blob sent, as HTTP allows.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    if start.trim().is_empty() {
        return Some(ByteRange::Suffix(number(end)?));
    }
    let start = number(start)?;
    if end.trim().is_empty() {
        return Some(ByteRange::From { start, end: None });
    }
    let last = number(end)?;
    (last >= start).then_some(ByteRange::From {
        start,
        end: Some(last + 1),
    })
}

fn proxy_error(e: ProxyError, not_found_code: &'static str) -> Response {
    let (status, code) = match &e {
        ProxyError::NotFound(_) => (StatusCode::NOT_FOUND, not_found_code),
        ProxyError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        ProxyError::Upstream(_) => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
        ProxyError::Refused(_) => (StatusCode::FORBIDDEN, "DENIED"),
        ProxyError::Cache(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        ProxyError::RangeNotSatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN"),
    };
    error(status, code, &e.to_string())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    with_api_version(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

fn internal() -> Response {
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let from = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(parse_range("bytes=0-99"), from(0, Some(100)));
        assert_eq!(parse_range("bytes=100-"), from(100, None));
        assert_eq!(parse_range("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(parse_range("bytes=5-4"), None);
        assert_eq!(parse_range("bytes=0-1,4-5"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=x-1"), None);
        assert_eq!(ByteRange::Suffix(5).resolve(3), Some((0, 3)));
        assert_eq!(from(10, None).unwrap().resolve(10), None);
        assert_eq!(from(2, Some(100)).unwrap().resolve(10), Some((2, 10)));
    }
}
