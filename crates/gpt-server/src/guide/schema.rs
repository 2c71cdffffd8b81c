//! Bounding a JSON schema so that every value it allows is finite in a known way: a
//! constrained answer then always comes to an end, even from a model that never chooses to
//! close a string. The bounded schema is stricter than the original, so whatever it
//! accepts the original accepts too.
//!
//! * an object without `additionalProperties` gets `false` (only the declared properties;
//!   one without `properties` keeps any keys, as `{"type":"object"}` means);
//! * a string without `maxLength`, `enum`, `const`, `pattern` or `format` gets `maxLength`
//!   [`MAX_STRING`];
//! * an array without `maxItems` gets [`MAX_ITEMS`];
//! * an integer or number without bounds gets ±[`MAX_MAGNITUDE`].

use serde_json::{Map, Value};

/// Longest string (characters) a bounded schema allows where the schema says nothing.
pub const MAX_STRING: u64 = 256;
/// Most array items where the schema says nothing.
pub const MAX_ITEMS: u64 = 16;
/// Largest magnitude of a number where the schema says nothing.
pub const MAX_MAGNITUDE: f64 = 1e15;
/// Deepest nesting rewritten (deeper schemas are kept as they are).
const MAX_DEPTH: usize = 32;

/// The bounded copy of `schema`.
pub fn bound_schema(schema: &Value) -> Value {
    let mut s = schema.clone();
    bound(&mut s, 0);
    s
}

fn types(o: &Map<String, Value>) -> Vec<&str> {
    match o.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn bound(v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Value::Object(o) = v else { return };
    let ty: Vec<String> = types(o).into_iter().map(str::to_string).collect();
    let has = |o: &Map<String, Value>, k: &str| o.contains_key(k);
    let fixed = has(o, "enum") || has(o, "const");
    for t in &ty {
        match t.as_str() {
            "object" if !has(o, "additionalProperties") && has(o, "properties") => {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            "string"
                if !fixed && !has(o, "maxLength") && !has(o, "pattern") && !has(o, "format") =>
            {
                o.insert("maxLength".into(), MAX_STRING.into());
            }
            "array" if !has(o, "maxItems") => {
                o.insert("maxItems".into(), MAX_ITEMS.into());
            }
            "integer" | "number" if !fixed => {
                if !has(o, "maximum") && !has(o, "exclusiveMaximum") {
                    o.insert("maximum".into(), MAX_MAGNITUDE.into());
                }
                if !has(o, "minimum") && !has(o, "exclusiveMinimum") {
                    o.insert("minimum".into(), (-MAX_MAGNITUDE).into());
                }
            }
            _ => {}
        }
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(Value::Object(props)) = o.get_mut(key) {
            for p in props.values_mut() {
                bound(p, depth + 1);
            }
        }
    }
    for key in ["items", "additionalProperties", "not", "contains"] {
        if let Some(x) = o.get_mut(key) {
            bound(x, depth + 1);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(a)) = o.get_mut(key) {
            for x in a {
                bound(x, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_what_is_unbounded_and_keeps_the_rest() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "maxLength": 3},
            "c": {"type": "array", "items": {"type": "integer"}},
            "d": {"type": "string", "enum": ["x"]},
            "e": {"type": "number", "minimum": 0}
        }});
        let b = bound_schema(&s);
        assert_eq!(b["additionalProperties"], json!(false));
        assert_eq!(b["properties"]["a"]["maxLength"], json!(MAX_STRING));
        assert_eq!(b["properties"]["b"]["maxLength"], json!(3));
        assert_eq!(b["properties"]["c"]["maxItems"], json!(MAX_ITEMS));
        assert_eq!(
            b["properties"]["c"]["items"]["maximum"],
            json!(MAX_MAGNITUDE)
        );
        assert!(b["properties"]["d"].get("maxLength").is_none());
        assert_eq!(b["properties"]["e"]["minimum"], json!(0));
        assert_eq!(b["properties"]["e"]["maximum"], json!(MAX_MAGNITUDE));
        // An object with no declared properties keeps any keys.
        let b = bound_schema(&json!({"type": "object"}));
        assert!(b.get("additionalProperties").is_none());
    }
}
