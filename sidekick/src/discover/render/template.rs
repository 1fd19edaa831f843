//! The templates: minijinja (Jinja2), compiled once at start so a syntax
//! error stops `discover render` before it touches anything, with the
//! file, line and column in the message.
//!
//! Settings, as Ansible's `template` module has them for config files:
//! `trim_blocks` (a block tag's own newline is dropped) and
//! `keep_trailing_newline`. Undefined values are semi-strict: printing or
//! iterating one fails (a missing attribute in the data keeps the old
//! file), testing one in `{% if %}` is false.

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};

/// The compiled templates, named by their path.
#[derive(Debug)]
pub struct Templates {
    /// minijinja's environment with render's settings, holding each
    /// template under its SRC path.
    env: Environment<'static>,
}

impl Templates {
    /// An empty set with render's settings.
    pub fn new() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .map_err(|e| anyhow::anyhow!("template settings: {e}"))?,
        );
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_debug(true);
        Ok(Self { env })
    }

    /// Whether the template from `src` is already compiled.
    pub fn has(&self, src: &Path) -> bool {
        self.env.get_template(&src.display().to_string()).is_ok()
    }

    /// Compile the template in `src`; a syntax error says where.
    pub fn add(&mut self, src: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(src)
            .map_err(|e| format!("cannot read the template {}: {e}", src.display()))?;
        let name = src.display().to_string();
        self.env
            .add_template_owned(name.clone(), text.clone())
            .map_err(|e| describe(src, &text, &e))
    }

    /// Render the template from `src` with `ctx`; an error says where.
    pub fn render(&self, src: &Path, ctx: &serde_json::Value) -> Result<String, String> {
        let name = src.display().to_string();
        let t = self
            .env
            .get_template(&name)
            .map_err(|e| format!("{}: {e}", src.display()))?;
        t.render(minijinja::Value::from(Serde(ctx))).map_err(|e| {
            let source = e.template_source().map(str::to_owned).unwrap_or_default();
            describe(src, &source, &e)
        })
    }
}

/// `FILE:LINE:COL: what` (the column when minijinja gives a span), then
/// the causes.
fn describe(src: &Path, text: &str, e: &minijinja::Error) -> String {
    let mut at = PathBuf::from(src).display().to_string();
    if let Some(line) = e.line() {
        at.push_str(&format!(":{line}"));
        if let Some(col) = e.range().and_then(|r| column(text, r.start)) {
            at.push_str(&format!(":{col}"));
        }
    }
    let mut msg = format!("{at}: {}", e.kind());
    if let Some(d) = e.detail() {
        msg.push_str(": ");
        msg.push_str(d);
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// The 1-based column (in characters) of byte `offset` in `text`.
fn column(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.j2");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let (_d, p) = with(
            "upstream web {\n  {% for b in web %}\n  server {{ b.ip }:{{ b.port }};\n  {% endfor %}\n}\n",
        );
        let err = Templates::new().unwrap().add(&p).unwrap_err();
        let want = format!("{}:3:", p.display());
        assert!(err.starts_with(&want), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn sort_by_attribute_and_a_missing_attribute_fails() {
        let (_d, p) = with(
            "{% for b in web | sort(attribute='port') %}{{ b.ip }}:{{ b.port }}\n{% endfor %}",
        );
        let mut t = Templates::new().unwrap();
        t.add(&p).unwrap();
        let ctx = serde_json::json!({"web": [
            {"ip": "10.0.0.2", "port": 3002},
            {"ip": "10.0.0.1", "port": 3001},
        ]});
        assert_eq!(
            t.render(&p, &ctx).unwrap(),
            "10.0.0.1:3001\n10.0.0.2:3002\n"
        );
        let ctx = serde_json::json!({"web": [{"ip": "10.0.0.1"}]});
        let err = t.render(&p, &ctx).unwrap_err();
        assert!(err.starts_with(&format!("{}:1:", p.display())), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }
}
