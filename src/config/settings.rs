//! Variables that belong to one tool (its provider's URL, key, model, prices). The tool declares
//! them ([`Setting`]); config keeps what the environment said and knows no tool. The registry
//! checks them at start-up (`crate::tools::check_settings`) and lists them (`agent-meter tools
//! env`, the source of `.env.example`'s tool block).

use std::{collections::BTreeMap, str::FromStr};

use rust_decimal::Decimal;

use super::{Config, ConfigError, Secret, bad};

/// What a setting holds, and so how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An absolute URL (a trailing `/` is dropped).
    Url,
    /// A secret: never logged, never printed.
    Secret,
    /// A non-negative decimal (a price).
    Decimal,
    /// Free text.
    Text,
}

/// One environment variable a tool reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    /// Used when the variable is unset or blank.
    pub default: Option<&'static str>,
    /// Start-up fails when it is unset and has no default.
    pub required: bool,
    /// One line for `.env.example` and `agent-meter tools env`.
    pub about: &'static str,
}

/// The environment as read, for settings (values kept as secrets: `Debug` shows none).
#[derive(Debug, Clone, Default)]
pub struct Raw(BTreeMap<String, Secret>);

impl Raw {
    pub(super) fn new(vars: &std::collections::HashMap<String, String>) -> Self {
        Self(
            vars.iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.trim())))
                .filter(|(_, v)| !v.expose().is_empty())
                .collect(),
        )
    }
}

impl Config {
    /// The value of `setting`, or its default (`None`: unset and no default).
    pub fn setting(&self, setting: &Setting) -> Option<String> {
        self.raw
            .0
            .get(setting.name)
            .map(|v| v.expose().to_string())
            .or_else(|| setting.default.map(str::to_string))
            .map(|v| match setting.kind {
                Kind::Url => v.trim_end_matches('/').to_string(),
                _ => v,
            })
    }

    /// A [`Kind::Secret`] setting's value.
    pub fn secret_setting(&self, setting: &Setting) -> Option<Secret> {
        self.setting(setting).map(Secret::new)
    }

    /// A [`Kind::Decimal`] setting's value (unreadable counts as unset; [`Config::check_setting`]
    /// refuses it at start-up).
    pub fn decimal_setting(&self, setting: &Setting) -> Option<Decimal> {
        self.setting(setting)
            .and_then(|v| Decimal::from_str(&v).ok())
    }

    /// Whether `setting` is usable: present when required, a URL when a URL, a non-negative
    /// decimal when a decimal.
    pub fn check_setting(&self, setting: &Setting) -> Result<(), ConfigError> {
        let Some(value) = self.setting(setting) else {
            return if setting.required {
                Err(bad(setting.name, "required"))
            } else {
                Ok(())
            };
        };
        match setting.kind {
            Kind::Url => reqwest::Url::parse(&value)
                .map(|_| ())
                .map_err(|e| bad(setting.name, format!("not a URL: {e}"))),
            Kind::Decimal => Decimal::from_str(&value)
                .ok()
                .filter(|d| !d.is_sign_negative())
                .map(|_| ())
                .ok_or_else(|| {
                    bad(
                        setting.name,
                        format!("not a non-negative decimal: {value:?}"),
                    )
                }),
            Kind::Secret | Kind::Text => Ok(()),
        }
    }
}

/// `.env.example` lines for a tool's settings: its comment, then each variable commented out
/// with its default (secrets and variables without a default left empty).
pub fn env_example(title: &str, settings: &[Setting]) -> String {
    let mut out = format!("# {title}\n");
    for s in settings {
        out.push_str(&format!(
            "# {}{}\n",
            s.about,
            if s.required { " (required)" } else { "" }
        ));
        let value = match s.kind {
            Kind::Secret => "",
            _ => s.default.unwrap_or(""),
        };
        out.push_str(&format!("#{}={value}\n", s.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: Setting = Setting {
        name: "X_URL",
        kind: Kind::Url,
        default: Some("https://example.com/layer/"),
        required: false,
        about: "a layer",
    };
    const PRICE: Setting = Setting {
        name: "X_PRICE",
        kind: Kind::Decimal,
        default: None,
        required: false,
        about: "a price",
    };
    const KEY: Setting = Setting {
        name: "X_KEY",
        kind: Kind::Secret,
        default: None,
        required: true,
        about: "a key",
    };

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("config")
    }

    #[test]
    fn defaults_apply_and_values_are_checked_by_kind() {
        let c = config(&[]);
        assert_eq!(
            c.setting(&URL).as_deref(),
            Some("https://example.com/layer")
        );
        assert!(c.check_setting(&URL).is_ok());
        assert_eq!(c.setting(&PRICE), None);
        assert!(c.check_setting(&PRICE).is_ok());
        assert!(c.check_setting(&KEY).is_err(), "required and unset");
        let c = config(&[("X_URL", "not a url"), ("X_PRICE", "-1"), ("X_KEY", "  ")]);
        assert!(c.check_setting(&URL).is_err());
        assert!(c.check_setting(&PRICE).is_err());
        assert!(c.check_setting(&KEY).is_err(), "blank is unset");
        let c = config(&[("X_PRICE", "0.30"), ("X_KEY", "k-123")]);
        assert_eq!(c.decimal_setting(&PRICE), Some(Decimal::new(30, 2)));
        assert_eq!(
            c.secret_setting(&KEY)
                .map(|s| s.expose().to_string())
                .as_deref(),
            Some("k-123")
        );
        assert!(
            !format!("{c:?}").contains("k-123"),
            "settings are not printed"
        );
    }

    #[test]
    fn env_example_lists_each_variable_without_secrets() {
        let text = env_example("X (a tool)", &[URL, KEY]);
        assert_eq!(
            text,
            "# X (a tool)\n# a layer\n#X_URL=https://example.com/layer/\n# a key (required)\n#X_KEY=\n"
        );
    }
}
