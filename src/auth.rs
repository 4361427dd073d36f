//! Verified identity, optional: with `[auth] jwt = {...}` in the node config, a `/chat` client
//! proves who it is with a JSON Web Token in its CONNECT auth payload (`{token}`, socket.io's
//! `auth` option), and its user name is a claim of that token instead of what it says it is.
//!
//! Tokens are issued elsewhere (the application's login); the node only verifies them, with
//! a shared secret (HS256) or the issuer's public key (RS256, ES256), so it never holds what
//! signs them unless HS256 is chosen. `clusterchat token` mints HS256 tokens for demos and tests.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An HS256 secret shorter than this is refused: a short one can be found by brute force.
pub const MIN_SECRET_LEN: usize = 16;
/// The largest `leeway_secs`: past a few minutes a clock is wrong, not skewed.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The `[auth]` section: how clients prove who they are. Empty (the default): they don't, and
/// the chat takes the user name the client gives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt: Option<JwtSettings>,
}

/// The signing algorithms accepted: one per node, so a token cannot pick a weaker one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

/// `[auth] jwt = {...}`: how tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret (at least [`MIN_SECRET_LEN`] bytes).
    pub secret: Option<String>,
    /// RS256 / ES256: the issuer's public key, a PEM file.
    pub public_key: Option<PathBuf>,
    /// The claim whose (string) value is the chat's user name.
    pub user_claim: String,
    /// When set, a token's `aud` must name it.
    pub audience: Option<String>,
    /// When set, a token's `iss` must be it.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds (at most [`MAX_LEEWAY_SECS`]).
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: None,
            public_key: None,
            user_claim: "sub".into(),
            audience: None,
            issuer: None,
            leeway_secs: 5,
        }
    }
}

/// A `[auth]` setting that cannot work, or a key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.jwt: {0}")]
    Invalid(&'static str),
    #[error("cannot read auth.jwt.public_key {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("auth.jwt.public_key {path} is not a PEM public key for {algorithm:?}: {source}")]
    BadKey { path: PathBuf, algorithm: JwtAlgorithm, source: jsonwebtoken::errors::Error },
    #[error("cannot mint a token: {0}")]
    Mint(String),
}

/// Why a client's token was refused: the text of its CONNECT_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a token is required: connect with auth {{token}}")]
    Missing,
    #[error("token must be a string")]
    NotAString,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token is from another issuer")]
    WrongIssuer,
    #[error("token is not signed with {0:?}")]
    WrongAlgorithm(JwtAlgorithm),
    #[error("token has no {0} claim")]
    MissingClaim(String),
    #[error("token claim {0} must be a string")]
    ClaimNotAString(String),
    #[error("token is malformed")]
    Malformed,
}

/// Checks tokens against one node's [`JwtSettings`]; built once at start.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: JwtAlgorithm,
    user_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key: a secret has no place in a log line.
        f.debug_struct("JwtVerifier").field("algorithm", &self.algorithm).field("user_claim", &self.user_claim).finish()
    }
}

impl JwtSettings {
    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), AuthError> {
        let hmac = self.algorithm == JwtAlgorithm::HS256;
        let checks = [
            (hmac && self.secret.is_none(), "HS256 needs a secret"),
            (hmac && self.public_key.is_some(), "HS256 takes a secret, not a public_key"),
            (!hmac && self.public_key.is_none(), "RS256 and ES256 need a public_key (PEM file)"),
            (!hmac && self.secret.is_some(), "RS256 and ES256 take a public_key, not a secret"),
            (self.secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_LEN), "secret must be at least 16 bytes"),
            (self.user_claim.is_empty(), "user_claim must not be empty"),
            (self.leeway_secs > MAX_LEEWAY_SECS, "leeway_secs must be at most 300"),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(AuthError::Invalid(msg)),
            None => Ok(()),
        }
    }

    /// The verifier of these settings (reading the public key file).
    pub fn verifier(&self) -> Result<JwtVerifier, AuthError> {
        self.validate()?;
        let key = match (&self.secret, &self.public_key) {
            (Some(secret), _) => DecodingKey::from_secret(secret.as_bytes()),
            (None, Some(path)) => self.public_key(path)?,
            (None, None) => return Err(AuthError::Invalid("no key")),
        };
        let mut validation = Validation::new(self.algorithm.into());
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        // `validate_aud` stays on: a token that names an audience is refused unless this node
        // is that audience (with none configured, any token naming one is for someone else).
        let mut required = vec!["exp"];
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { key, validation, algorithm: self.algorithm, user_claim: self.user_claim.clone() })
    }

    fn public_key(&self, path: &Path) -> Result<DecodingKey, AuthError> {
        let pem = std::fs::read(path).map_err(|source| AuthError::ReadKey { path: path.into(), source })?;
        let key = match self.algorithm {
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        };
        key.map_err(|source| AuthError::BadKey { path: path.into(), algorithm: self.algorithm, source })
    }

    /// An HS256 token for `user` valid `ttl_secs` from now, with this node's claim name,
    /// audience and issuer: for demos and tests, where the secret is at hand.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> Result<String, AuthError> {
        self.validate()?;
        let secret = match (self.algorithm, &self.secret) {
            (JwtAlgorithm::HS256, Some(secret)) => secret,
            _ => {
                return Err(AuthError::Mint(
                    "only HS256 tokens are minted here (RS256/ES256 need the private key)".into(),
                ))
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut claims = Map::new();
        claims.insert(self.user_claim.clone(), user.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(ttl_secs).into());
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), aud.as_str().into());
        }
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), iss.as_str().into());
        }
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|e| AuthError::Mint(e.to_string()))
    }
}

impl JwtVerifier {
    /// The user name the client's CONNECT auth payload proves, or why it proves none.
    pub fn user(&self, auth: &Value) -> Result<String, Refusal> {
        let token = match auth.get("token") {
            None | Some(Value::Null) => return Err(Refusal::Missing),
            Some(Value::String(token)) => token,
            Some(_) => return Err(Refusal::NotAString),
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|err| self.refusal(err.kind()))?
            .claims;
        match claims.get(&self.user_claim) {
            Some(Value::String(user)) => Ok(user.clone()),
            Some(_) => Err(Refusal::ClaimNotAString(self.user_claim.clone())),
            None => Err(Refusal::MissingClaim(self.user_claim.clone())),
        }
    }

    fn refusal(&self, kind: &ErrorKind) -> Refusal {
        match kind {
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidSignature => Refusal::BadSignature,
            ErrorKind::InvalidAudience => Refusal::WrongAudience,
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
            ErrorKind::InvalidAlgorithm => Refusal::WrongAlgorithm(self.algorithm),
            ErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim.clone()),
            _ => Refusal::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    fn hs256() -> JwtSettings {
        JwtSettings { secret: Some(SECRET.into()), ..JwtSettings::default() }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    /// A token with `claims`, signed with `key` by `algorithm`.
    fn sign(algorithm: Algorithm, key: &EncodingKey, claims: Value) -> Value {
        json!({ "token": jsonwebtoken::encode(&Header::new(algorithm), &claims, key).unwrap() })
    }

    fn hs(secret: &str, claims: Value) -> Value {
        sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), claims)
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
    }

    #[test]
    fn a_valid_token_names_the_user_by_its_claim() {
        let v = hs256().verifier().unwrap();
        assert_eq!(v.user(&hs(SECRET, json!({"sub": "alice", "exp": now() + 60}))), Ok("alice".into()));
        let v = JwtSettings { user_claim: "name".into(), ..hs256() }.verifier().unwrap();
        assert_eq!(v.user(&hs(SECRET, json!({"sub": "x", "name": "Zoë", "exp": now() + 60}))), Ok("Zoë".into()));
        assert_eq!(
            v.user(&hs(SECRET, json!({"sub": "x", "exp": now() + 60}))),
            Err(Refusal::MissingClaim("name".into()))
        );
        assert_eq!(
            v.user(&hs(SECRET, json!({"name": 5, "exp": now() + 60}))),
            Err(Refusal::ClaimNotAString("name".into()))
        );
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused_past_the_leeway() {
        let v = hs256().verifier().unwrap();
        assert_eq!(v.user(&hs(SECRET, json!({"sub": "a", "exp": now() - 60}))), Err(Refusal::Expired));
        // Within the leeway (5 s), a just-expired token still passes: clocks differ.
        assert!(v.user(&hs(SECRET, json!({"sub": "a", "exp": now() - 1}))).is_ok());
        let future = json!({"sub": "a", "nbf": now() + 60, "exp": now() + 120});
        assert_eq!(v.user(&hs(SECRET, future)), Err(Refusal::NotYetValid));
        // A token without an expiry would be good forever.
        assert_eq!(v.user(&hs(SECRET, json!({"sub": "a"}))), Err(Refusal::MissingClaim("exp".into())));
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let v = hs256().verifier().unwrap();
        let claims = json!({"sub": "a", "exp": now() + 60});
        assert_eq!(v.user(&hs("another-secret-of-many-bytes", claims.clone())), Err(Refusal::BadSignature));
        // A payload swapped under a real signature.
        let real = hs(SECRET, claims)["token"].as_str().unwrap().to_owned();
        let other = hs(SECRET, json!({"sub": "mallory", "exp": now() + 60}))["token"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = real.split('.').collect();
        let swapped = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(v.user(&json!({ "token": swapped })), Err(Refusal::BadSignature));
        // alg "none" and garbage.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", other.split('.').nth(1).unwrap());
        assert_eq!(v.user(&json!({ "token": none })), Err(Refusal::Malformed));
        assert_eq!(v.user(&json!({ "token": "not a token" })), Err(Refusal::Malformed));
        // Another algorithm than the node's.
        let es = EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap();
        let es_token = sign(Algorithm::ES256, &es, json!({"sub": "a", "exp": now() + 60}));
        assert_eq!(v.user(&es_token), Err(Refusal::WrongAlgorithm(JwtAlgorithm::HS256)));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let v =
            JwtSettings { audience: Some("chat".into()), issuer: Some("login".into()), ..hs256() }.verifier().unwrap();
        let exp = now() + 60;
        assert_eq!(v.user(&hs(SECRET, json!({"sub": "a", "aud": "chat", "iss": "login", "exp": exp}))), Ok("a".into()));
        let wrong_aud = json!({"sub": "a", "aud": "billing", "iss": "login", "exp": exp});
        assert_eq!(v.user(&hs(SECRET, wrong_aud)), Err(Refusal::WrongAudience));
        let wrong_iss = json!({"sub": "a", "aud": "chat", "iss": "evil", "exp": exp});
        assert_eq!(v.user(&hs(SECRET, wrong_iss)), Err(Refusal::WrongIssuer));
        let no_aud = json!({"sub": "a", "iss": "login", "exp": exp});
        assert_eq!(v.user(&hs(SECRET, no_aud)), Err(Refusal::MissingClaim("aud".into())));
        // Without an audience configured, a token meant for someone else is refused too.
        let plain = hs256().verifier().unwrap();
        assert_eq!(
            plain.user(&hs(SECRET, json!({"sub": "a", "aud": "billing", "exp": exp}))),
            Err(Refusal::WrongAudience)
        );
    }

    #[test]
    fn a_missing_token_is_refused() {
        let v = hs256().verifier().unwrap();
        assert_eq!(v.user(&json!({})), Err(Refusal::Missing));
        assert_eq!(v.user(&json!({"user": "alice"})), Err(Refusal::Missing));
        assert_eq!(v.user(&json!({"token": 42})), Err(Refusal::NotAString));
        assert_eq!(Refusal::Missing.to_string(), "a token is required: connect with auth {token}");
    }

    #[test]
    fn public_keys_verify_rs256_and_es256() {
        for (algorithm, private, public) in [
            (JwtAlgorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
            (JwtAlgorithm::ES256, "es256-private.pem", "es256-public.pem"),
        ] {
            let settings = JwtSettings { algorithm, public_key: Some(fixture(public)), ..JwtSettings::default() };
            let v = settings.verifier().unwrap();
            let pem = std::fs::read(fixture(private)).unwrap();
            let key = match algorithm {
                JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
                _ => EncodingKey::from_ec_pem(&pem).unwrap(),
            };
            let token = sign(algorithm.into(), &key, json!({"sub": "carol", "exp": now() + 60}));
            assert_eq!(v.user(&token), Ok("carol".into()), "{algorithm:?}");
            // An HS256 token made with the public key as its secret (the classic confusion).
            let confused = hs(
                &String::from_utf8(std::fs::read(fixture(public)).unwrap()).unwrap(),
                json!({"sub": "m", "exp": now() + 60}),
            );
            assert_eq!(v.user(&confused), Err(Refusal::WrongAlgorithm(algorithm)));
        }
        // A key of the wrong kind is named at start.
        let wrong = JwtSettings {
            algorithm: JwtAlgorithm::ES256,
            public_key: Some(fixture("rs256-public.pem")),
            ..JwtSettings::default()
        };
        assert!(matches!(wrong.verifier(), Err(AuthError::BadKey { .. })));
        let missing = JwtSettings {
            algorithm: JwtAlgorithm::RS256,
            public_key: Some(fixture("nope.pem")),
            ..JwtSettings::default()
        };
        assert!(matches!(missing.verifier(), Err(AuthError::ReadKey { .. })));
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let short = JwtSettings { secret: Some("short".into()), ..JwtSettings::default() };
        assert!(short.validate().unwrap_err().to_string().contains("16 bytes"));
        assert!(JwtSettings::default().validate().unwrap_err().to_string().contains("needs a secret"));
        let both =
            JwtSettings { algorithm: JwtAlgorithm::RS256, secret: Some(SECRET.into()), ..JwtSettings::default() };
        assert!(both.validate().is_err());
        assert!(JwtSettings { leeway_secs: 3600, ..hs256() }.validate().is_err());
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_configured_claims() {
        let settings = JwtSettings { audience: Some("chat".into()), issuer: Some("demo".into()), ..hs256() };
        let token = settings.mint("dave", 60).unwrap();
        assert_eq!(settings.verifier().unwrap().user(&json!({ "token": token })), Ok("dave".into()));
        let rs = JwtSettings {
            algorithm: JwtAlgorithm::RS256,
            public_key: Some(fixture("rs256-public.pem")),
            ..JwtSettings::default()
        };
        assert!(matches!(rs.mint("dave", 60), Err(AuthError::Mint(_))));
    }
}
