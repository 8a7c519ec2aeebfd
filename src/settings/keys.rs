//! Unknown keys: the file still loads (the seed's files carry keys this version does not use),
//! but each unknown key gets a warning naming it and the nearest valid key. The valid names
//! come from the serde derive itself, so this list can never drift from the structs.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::Value;

/// The field names serde accepts for struct `T` (its `FIELDS`, renames included).
pub(crate) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always fails after capturing the names; the error is the expected outcome.
    let _ = T::deserialize(FieldProbe {
        fields: &mut fields,
    });
    fields
}

/// A deserializer that only answers `deserialize_struct`, to read the field list.
struct FieldProbe<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probed> {
        *self.fields = fields;
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// What a key holds, for walking into nested sections.
pub(crate) enum Shape {
    /// An object whose keys are the fields of a struct; the closure maps a field to its shape.
    Struct {
        fields: &'static [&'static str],
        child: fn(&str) -> Shape,
    },
    /// A list of objects of one shape.
    List(fn(&str) -> Shape, &'static [&'static str]),
    /// Anything: free-form maps (emails, caller_id) and scalars.
    Leaf,
}

/// One warning per unknown key: `dids[0].pasword: unknown key (did you mean "password"?)`.
pub(crate) fn unknown_keys(value: &Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
    match (shape, value) {
        (Shape::Struct { fields, child }, Value::Object(map)) => {
            for (key, inner) in map {
                let inner_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if fields.contains(&key.as_str()) {
                    unknown_keys(inner, &child(key), &inner_path, out);
                } else {
                    out.push(unknown_key_message(&inner_path, key, fields));
                }
            }
        }
        (Shape::List(child, fields), Value::Array(items)) => {
            let item_shape = Shape::Struct {
                fields,
                child: *child,
            };
            for (index, item) in items.iter().enumerate() {
                unknown_keys(item, &item_shape, &format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

fn unknown_key_message(path: &str, key: &str, fields: &[&str]) -> String {
    let nearest = fields
        .iter()
        .map(|field| (strsim::jaro_winkler(key, field), *field))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, field)) => format!("{path}: unknown key, ignored (did you mean \"{field}\"?)"),
        None => format!("{path}: unknown key, ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Example {
        password: String,
        #[serde(rename = "expire-seconds")]
        expire: u32,
    }

    #[test]
    fn field_names_come_from_the_derive() {
        assert_eq!(field_names::<Example>(), ["password", "expire-seconds"]);
    }

    #[test]
    fn unknown_keys_name_the_nearest_valid_key() {
        let shape = Shape::List(|_| Shape::Leaf, field_names::<Example>());
        let value = serde_json::json!([{"password": "x"}, {"pasword": "x", "zzz": 1}]);
        let mut warnings = Vec::new();
        unknown_keys(&value, &shape, "dids", &mut warnings);
        assert_eq!(
            warnings,
            [
                "dids[1].pasword: unknown key, ignored (did you mean \"password\"?)",
                "dids[1].zzz: unknown key, ignored"
            ]
        );
    }
}
