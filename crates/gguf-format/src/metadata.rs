//! The metadata key/value table of a GGUF file, in file order, with typed getters.

use std::collections::HashMap;

use crate::{Array, Error, Result, Value};

/// Metadata key/value pairs, kept in file order, indexed by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> Error {
    Error::WrongType {
        key: key.to_string(),
        expected: expected.to_string(),
        found: found.describe(),
    }
}

macro_rules! int_getters {
    ($( $get:ident, $get_opt:ident, $t:ty, $name:literal; )*) => {$(
        #[doc = concat!("The value of `key` as ", $name, ": any integer type whose value fits is accepted.")]
        pub fn $get(&self, key: &str) -> Result<$t> {
            self.$get_opt(key)?.ok_or_else(|| Error::MissingKey { key: key.to_string() })
        }

        #[doc = concat!("Like [`Metadata::", stringify!($get), "`] but a missing key gives `Ok(None)`.")]
        pub fn $get_opt(&self, key: &str) -> Result<Option<$t>> {
            let Some(v) = self.get(key) else { return Ok(None) };
            let i = v.as_integer().ok_or_else(|| wrong_type(key, "an integer", v))?;
            <$t>::try_from(i).map(Some).map_err(|_| Error::OutOfRange {
                key: key.to_string(),
                value: v.describe(),
                expected: $name,
            })
        }
    )*};
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair; a key already present is an [`Error::DuplicateKey`].
    pub fn insert(&mut self, key: String, value: Value) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets `key` to `value`, keeping the key's position if it exists, else appending.
    pub fn upsert(&mut self, key: String, value: Value) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// All pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    int_getters! {
        get_u32, get_opt_u32, u32, "u32";
        get_u64, get_opt_u64, u64, "u64";
        get_i32, get_opt_i32, i32, "i32";
        get_i64, get_opt_i64, i64, "i64";
        get_usize, get_opt_usize, usize, "usize";
    }

    /// The value of `key` as `f32` (only `f32` values are accepted).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_opt_f32(key)?.ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    /// Like [`Metadata::get_f32`] but a missing key gives `Ok(None)`.
    pub fn get_opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(v) => Err(wrong_type(key, "f32", v)),
        }
    }

    /// The value of `key` as `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get_opt_bool(key)?.ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    /// Like [`Metadata::get_bool`] but a missing key gives `Ok(None)`.
    pub fn get_opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(v) => Err(wrong_type(key, "bool", v)),
        }
    }

    /// The value of `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_opt_str(key)?.ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    /// Like [`Metadata::get_str`] but a missing key gives `Ok(None)`.
    pub fn get_opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_type(key, "string", v)),
        }
    }

    /// The value of `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(wrong_type(key, "array", v)),
        }
    }

    /// The value of `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            Value::Array(Array::String(a)) => Ok(a),
            v => Err(wrong_type(key, "array[string]", v)),
        }
    }

    /// The value of `key` as an array of `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.require(key)? {
            Value::Array(Array::I32(a)) => Ok(a),
            v => Err(wrong_type(key, "array[i32]", v)),
        }
    }

    /// The value of `key` as an array of `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            Value::Array(Array::F32(a)) => Ok(a),
            v => Err(wrong_type(key, "array[f32]", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Metadata {
        let mut m = Metadata::new();
        m.insert("a.u64".into(), Value::U64(7)).unwrap();
        m.insert("a.big".into(), Value::U64(1 << 40)).unwrap();
        m.insert("a.neg".into(), Value::I32(-3)).unwrap();
        m.insert("a.f".into(), Value::F32(1.5)).unwrap();
        m.insert("a.s".into(), Value::String("gpt2".into()))
            .unwrap();
        m.insert(
            "a.toks".into(),
            Value::Array(Array::String(vec!["x".into()])),
        )
        .unwrap();
        m
    }

    #[test]
    fn integer_getters_convert_when_the_value_fits() {
        let m = table();
        assert_eq!(m.get_u32("a.u64").unwrap(), 7);
        assert_eq!(m.get_i32("a.u64").unwrap(), 7);
        assert_eq!(m.get_u64("a.big").unwrap(), 1 << 40);
        assert_eq!(m.get_i32("a.neg").unwrap(), -3);
        let e = m.get_u32("a.big").unwrap_err().to_string();
        assert!(
            e.contains("a.big") && e.contains("does not fit in u32"),
            "{e}"
        );
        let e = m.get_u64("a.neg").unwrap_err().to_string();
        assert!(e.contains("i32 -3"), "{e}");
    }

    #[test]
    fn missing_and_wrong_types_are_reported() {
        let m = table();
        assert!(matches!(m.get_u32("nope"), Err(Error::MissingKey { key }) if key == "nope"));
        assert_eq!(m.get_opt_u32("nope").unwrap(), None);
        assert_eq!(m.get_opt_str("nope").unwrap(), None);
        let e = m.get_u32("a.s").unwrap_err();
        assert!(matches!(&e, Error::WrongType { key, .. } if key == "a.s"));
        assert!(e
            .to_string()
            .contains("expected an integer, found string \"gpt2\""));
        let e = m.get_f32("a.u64").unwrap_err().to_string();
        assert!(e.contains("expected f32, found u64 7"), "{e}");
        let e = m.get_i32_array("a.toks").unwrap_err().to_string();
        assert!(e.contains("found array[string; 1]"), "{e}");
        assert_eq!(m.get_str_array("a.toks").unwrap(), ["x".to_string()]);
        assert_eq!(m.get_opt_f32("a.f").unwrap(), Some(1.5));
    }

    #[test]
    fn keeps_order_and_refuses_duplicates() {
        let mut m = table();
        let keys: Vec<_> = m.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys[0], "a.u64");
        assert_eq!(keys[5], "a.toks");
        assert!(matches!(
            m.insert("a.f".into(), Value::Bool(true)),
            Err(Error::DuplicateKey { .. })
        ));
        m.upsert("a.u64".into(), Value::U8(1));
        assert_eq!(m.iter().next().unwrap().1, &Value::U8(1));
        assert_eq!(m.len(), 6);
    }
}
