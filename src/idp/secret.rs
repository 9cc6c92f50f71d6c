//! IdP credentials: read from a file (systemd credentials), the environment,
//! `$CREDENTIALS_DIRECTORY`, or inline config, in that order. The value never appears
//! in `Debug`, `Display`, logs or error messages.

use super::IdpError;
use std::fmt;
use std::path::{Path, PathBuf};

/// A credential. Only [`Secret::expose`] reveals it, at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where one credential may come from, as configured.
pub struct SecretSources<'a> {
    /// Labels errors, e.g. `client secret of IdP "entra"`.
    pub what: String,
    pub file: Option<&'a Path>,
    pub env: Option<&'a str>,
    /// The file name looked for in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    pub credential: Option<String>,
    pub inline: Option<&'a str>,
}

impl SecretSources<'_> {
    /// Reads the credential from the first configured source. `Ok(None)` when none is
    /// configured (the caller decides whether that is an error).
    pub fn read(&self) -> Result<Option<Secret>, IdpError> {
        self.read_with(&|name| std::env::var(name).ok())
    }

    fn read_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Secret>, IdpError> {
        if let Some(path) = self.file {
            return read_file(path, &self.what).map(Some);
        }
        if let Some(name) = self.env {
            return match env(name) {
                Some(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(IdpError::Secret(format!(
                    "{}: environment variable {name} is not set or empty",
                    self.what
                ))),
            };
        }
        if let (Some(dir), Some(cred)) = (env("CREDENTIALS_DIRECTORY"), &self.credential) {
            let path = PathBuf::from(dir).join(cred);
            if path.is_file() {
                return read_file(&path, &self.what).map(Some);
            }
        }
        Ok(self.inline.map(|s| Secret::new(s.trim())))
    }
}

/// Reads a secret file; a trailing newline (as `echo` leaves it) is not part of it.
fn read_file(path: &Path, what: &str) -> Result<Secret, IdpError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| IdpError::Secret(format!("{what}: cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.trim().is_empty() {
        return Err(IdpError::Secret(format!(
            "{what}: {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources<'a>(
        file: Option<&'a Path>,
        env: Option<&'a str>,
        inline: Option<&'a str>,
    ) -> SecretSources<'a> {
        SecretSources {
            what: "client secret".into(),
            file,
            env,
            credential: Some("entra".into()),
            inline,
        }
    }

    #[test]
    fn a_secret_file_wins_and_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "from-file\n").unwrap();
        let s = sources(Some(&path), Some("X"), Some("inline"))
            .read_with(&|_| Some("from-env".into()))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-file");
    }

    #[test]
    fn the_credentials_directory_is_used_before_an_inline_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("entra"), "from-credentials").unwrap();
        let d = dir.path().display().to_string();
        let s = sources(None, None, Some("inline"))
            .read_with(&|name| (name == "CREDENTIALS_DIRECTORY").then(|| d.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-credentials");
    }

    #[test]
    fn a_missing_environment_variable_is_an_error_that_does_not_show_a_value() {
        let err = sources(None, Some("NOPE"), Some("inline-secret"))
            .read_with(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOPE"));
        assert!(!err.contains("inline-secret"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
    }
}
