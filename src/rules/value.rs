//! Plain values that leave the rules engine: property values in a [`super::Decision`] and
//! event data going in. The only place that converts to and from Rhai's `Dynamic`.

use std::collections::BTreeMap;
use std::fmt;

use rhai::Dynamic;

/// A property value, as plain Rust data.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Unit,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A closure (only `dialplan` keeps one); shown as `<closure>`.
    Closure,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    /// Integers, and floats with no fractional part.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(number) => Some(*number),
            Value::Float(number) if number.fract() == 0.0 => Some(*number as i64),
            _ => None,
        }
    }

    /// Lua truthiness: everything but `()` and `false`.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Unit | Value::Bool(false))
    }

    pub fn from_dynamic(value: &Dynamic) -> Value {
        if value.is_unit() {
            Value::Unit
        } else if let Ok(flag) = value.as_bool() {
            Value::Bool(flag)
        } else if let Ok(number) = value.as_int() {
            Value::Int(number)
        } else if let Ok(number) = value.as_float() {
            Value::Float(number)
        } else if value.is_string() {
            Value::Str(value.to_string())
        } else if value.is_array() {
            let items = value.read_lock::<rhai::Array>();
            Value::Array(
                items
                    .map(|items| items.iter().map(Value::from_dynamic).collect())
                    .unwrap_or_default(),
            )
        } else if value.is_map() {
            let map = value.read_lock::<rhai::Map>();
            Value::Map(
                map.map(|map| {
                    map.iter()
                        .map(|(key, item)| (key.to_string(), Value::from_dynamic(item)))
                        .collect()
                })
                .unwrap_or_default(),
            )
        } else if value.is_fnptr() {
            Value::Closure
        } else {
            Value::Str(value.to_string())
        }
    }

    pub fn to_dynamic(&self) -> Dynamic {
        match self {
            Value::Unit | Value::Closure => Dynamic::UNIT,
            Value::Bool(flag) => Dynamic::from_bool(*flag),
            Value::Int(number) => Dynamic::from_int(*number),
            Value::Float(number) => Dynamic::from_float(*number),
            Value::Str(text) => Dynamic::from(text.clone()),
            Value::Array(items) => {
                Dynamic::from_array(items.iter().map(Value::to_dynamic).collect())
            }
            Value::Map(map) => Dynamic::from_map(
                map.iter()
                    .map(|(key, item)| (key.as_str().into(), item.to_dynamic()))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Str(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Str(text)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Value {
        Value::Bool(flag)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Value {
        Value::Int(number)
    }
}

/// Written as a person reads it: strings quoted, lists in brackets.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unit => f.write_str("()"),
            Value::Bool(flag) => write!(f, "{flag}"),
            Value::Int(number) => write!(f, "{number}"),
            Value::Float(number) => write!(f, "{number}"),
            Value::Str(text) => write!(f, "{text:?}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("#{")?;
                for (index, (key, item)) in map.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}: {item}")?;
                }
                f.write_str("}")
            }
            Value::Closure => f.write_str("<closure>"),
        }
    }
}
