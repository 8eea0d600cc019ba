//! `CLM_HUB__SECTION__KEY` environment variables as a figment provider.

use figment::providers::Serialized;
use figment::value::{Dict, Value};

/// `CLM_HUB__CHANNELS__SMS__POLICY__RATE=50` → `channels.sms.policy.rate = 50`.
///
/// Figment's `Env` reads the process environment; this takes a captured list instead, so tests
/// and `load` callers control exactly what is seen. Values are typed as figment's `Env` types
/// them, except the paths in `as_string`, taken as strings.
pub(super) fn provider(
    vars: &[(String, String)],
    as_string: &[Vec<String>],
) -> impl figment::Provider {
    let mut dict = Dict::new();
    for (k, v) in vars {
        let path = path(k);
        let value = if as_string.contains(&path) {
            Value::from(v.clone())
        } else {
            parse_value(v)
        };
        insert_path(&mut dict, &path, value);
    }
    Serialized::defaults(dict)
}

/// `CLM_HUB__CHANNELS__SMS__POLICY__RATE` → `["channels", "sms", "policy", "rate"]`.
pub(super) fn path(key: &str) -> Vec<String> {
    key["CLM_HUB__".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

/// Environment values are typed like figment's `Env`: numbers, booleans, else strings.
fn parse_value(v: &str) -> Value {
    v.parse::<Value>()
        .unwrap_or_else(|_| Value::from(v.to_owned()))
}
