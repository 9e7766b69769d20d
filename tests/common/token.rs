//! A Bearer token service for a real `docker-registry` with `auth: token`:
//! checks Basic credentials, grants the scopes asked for, and signs an ES256
//! JWT whose `x5c` certificate is the registry's `rootcertbundle`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

pub const SERVICE: &str = "detour-test-registry";
pub const ISSUER: &str = "detour-test-issuer";

pub struct TokenService {
    pub realm: String,
    pub cert: PathBuf,
    pub issued: Arc<AtomicUsize>,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    user: String,
    password: String,
    issued: Arc<AtomicUsize>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenService {
    /// Starts the service on 127.0.0.1 in the current runtime.
    pub async fn start(dir: &Path, user: &str, password: &str) -> TokenService {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-signer".to_string()])
            .unwrap()
            .self_signed(&rc_key)
            .unwrap();
        assert_eq!(key.public_key().as_ref().len(), 65);
        let cert_path = dir.join("token-signer.crt");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let signer = Arc::new(Signer {
            key,
            cert_der: cert.der().to_vec(),
            user: user.into(),
            password: password.into(),
            issued: issued.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/token", get(token))
            .with_state(signer);
        tokio::spawn(async move { axum::serve(listener, app).await });
        TokenService {
            realm: format!("http://127.0.0.1:{port}/token"),
            cert: cert_path,
            issued,
        }
    }

    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

async fn token(
    State(signer): State<Arc<Signer>>,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", signer.user, signer.password))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let url = reqwest::Url::parse(&format!("http://token{uri}")).unwrap();
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let access: Vec<serde_json::Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": signer.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", signer.issued.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = signer
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    signer.issued.fetch_add(1, Ordering::SeqCst);
    let jwt = format!("{signing_input}.{}", b64url(signature.as_ref()));
    axum::Json(serde_json::json!({"token": jwt, "expires_in": 300})).into_response()
}
