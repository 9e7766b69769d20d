//! Content digests (`sha256:<hex>`, `sha384:`, `sha512:`), computed while
//! bytes stream past.

use ring::digest::{Context, SHA256, SHA384, SHA512};

use super::MirrorError;

/// A running digest in the algorithm of an expected digest.
pub struct Hasher {
    context: Context,
    prefix: &'static str,
}

impl Hasher {
    /// A hasher for the algorithm that `expected` (`alg:hex`) names.
    pub fn for_digest(expected: &str) -> Result<Hasher, MirrorError> {
        let (algorithm, prefix) = match expected.split_once(':').map(|(a, _)| a) {
            Some("sha256") => (&SHA256, "sha256"),
            Some("sha384") => (&SHA384, "sha384"),
            Some("sha512") => (&SHA512, "sha512"),
            _ => {
                return Err(MirrorError::Unsupported(format!(
                    "digest {expected:?}: only sha256, sha384 and sha512 are supported"
                )))
            }
        };
        Ok(Hasher {
            context: Context::new(algorithm),
            prefix,
        })
    }

    pub fn sha256() -> Hasher {
        Hasher {
            context: Context::new(&SHA256),
            prefix: "sha256",
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.context.update(bytes);
    }

    pub fn finish(self) -> String {
        let digest = self.context.finish();
        let mut out = String::with_capacity(self.prefix.len() + 1 + digest.as_ref().len() * 2);
        out.push_str(self.prefix);
        out.push(':');
        for b in digest.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The digest of `bytes` in the algorithm of `like` (sha256 when `like` is `None`).
pub fn digest_of(bytes: &[u8], like: Option<&str>) -> Result<String, MirrorError> {
    let mut hasher = match like {
        Some(d) => Hasher::for_digest(d)?,
        None => Hasher::sha256(),
    };
    hasher.update(bytes);
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            digest_of(b"", None).unwrap(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(digest_of(b"abc", Some("sha512:00"))
            .unwrap()
            .starts_with("sha512:ddaf35a1"));
        assert!(Hasher::for_digest("md5:00").is_err());
    }
}
