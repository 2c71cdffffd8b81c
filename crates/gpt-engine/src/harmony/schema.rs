//! JSON schema → the TypeScript-like type harmony shows for function tools.
//!
//! Reproduces openai-harmony 0.0.8's rendering rule by rule: objects become
//! `{\n…}` blocks with `// description` lines and `?` for optional keys,
//! `oneOf` becomes `\n | variant` lists, enums become string unions,
//! `integer` becomes `number`, arrays `T[]`, defaults trail as comments.

use serde_json::Value;

/// Whether `schema` has a non-empty `enum` array.
fn is_enum(schema: &Value) -> bool {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `default` as harmony words it: bare quotes around non-enum strings, the
/// raw string for enum strings when `raw_enum_string`, JSON otherwise.
fn default_text(owner: &Value, default: &Value, raw_enum_string: bool) -> String {
    match default.as_str() {
        Some(s) if !is_enum(owner) => format!("default: \"{s}\""),
        Some(s) if raw_enum_string => format!("default: {s}"),
        _ => format!("default: {default}"),
    }
}

/// Appends ` | null` to a variant type marked `nullable` unless it already says null.
fn with_nullable(schema: &Value, ty: String) -> String {
    let nullable = schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if nullable && !ty.contains("null") {
        format!("{ty} | null")
    } else {
        ty
    }
}

/// Renders `schema` with `indent` as the current indentation.
pub fn to_typescript(schema: &Value, indent: &str) -> String {
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        return one_of_top(variants, indent);
    }
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let names: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .map(|t| if t == "integer" { "number" } else { t })
            .collect();
        if !names.is_empty() {
            return names.join(" | ");
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => object(schema, indent),
        Some("string") => {
            let names: Vec<String> = schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|vals| {
                    vals.iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("\"{s}\""))
                        .collect()
                })
                .unwrap_or_default();
            if names.is_empty() {
                "string".to_string()
            } else {
                names.join(" | ")
            }
        }
        Some("number" | "integer") => "number".to_string(),
        Some("boolean") => "boolean".to_string(),
        Some("array") => match schema.get("items") {
            Some(items) => format!("{}[]", to_typescript(items, indent)),
            None => "Array<any>".to_string(),
        },
        _ => "any".to_string(),
    }
}

/// A schema whose own `oneOf` is an array: every variant on a ` | ` line.
fn one_of_top(variants: &[Value], indent: &str) -> String {
    let mut out = String::new();
    let inner = format!("{indent}   ");
    for v in variants {
        out.push('\n');
        out.push_str(indent);
        out.push_str(" | ");
        out.push_str(&with_nullable(v, to_typescript(v, &inner)));
        let mut comments: Vec<String> = Vec::new();
        if let Some(d) = str_field(v, "description") {
            comments.push(d.to_string());
        }
        if let Some(def) = v.get("default") {
            comments.push(default_text(v, def, false));
        }
        if !comments.is_empty() {
            out.push_str(" // ");
            out.push_str(&comments.join(" "));
        }
    }
    out
}

fn object(schema: &Value, indent: &str) -> String {
    let mut out = String::new();
    if let Some(d) = str_field(schema, "description") {
        out.push_str(&format!("{indent}// {d}\n"));
    }
    out.push_str("{\n");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, val) in props {
            let opt = if required.contains(&key.as_str()) {
                ""
            } else {
                "?"
            };
            property(&mut out, key, opt, val, indent);
        }
    }
    out.push_str(indent);
    out.push('}');
    out
}

/// One `key?: type,` entry of an object, with its comment lines.
fn property(out: &mut String, key: &str, opt: &str, val: &Value, indent: &str) {
    if let Some(t) = str_field(val, "title") {
        out.push_str(&format!("{indent}// {t}\n{indent}//\n"));
    }
    let one_of = val.get("oneOf");
    if one_of.is_none() {
        if let Some(d) = str_field(val, "description") {
            out.push_str(&format!("{indent}// {d}\n"));
        }
    }
    if let Some(examples) = val.get("examples").and_then(Value::as_array) {
        if !examples.is_empty() {
            out.push_str(&format!("{indent}// Examples:\n"));
            for ex in examples.iter().filter_map(Value::as_str) {
                out.push_str(&format!("{indent}// - \"{ex}\"\n"));
            }
        }
    }
    if let Some(variants) = one_of.and_then(Value::as_array) {
        one_of_property(out, key, opt, val, variants, indent);
        return;
    }
    out.push_str(&format!("{indent}{key}{opt}: "));
    let ty = to_typescript(val, &format!("{indent}    "));
    out.push_str(&with_nullable(val, ty));
    out.push(',');
    if one_of.is_none() {
        if let Some(def) = val.get("default") {
            out.push_str(" // ");
            out.push_str(&default_text(val, def, true));
        }
    }
    out.push('\n');
}

/// A property whose schema is a `oneOf` array: comments above, variants below.
fn one_of_property(
    out: &mut String,
    key: &str,
    opt: &str,
    val: &Value,
    variants: &[Value],
    indent: &str,
) {
    let prop_desc = str_field(val, "description");
    let first_desc = variants.first().and_then(|v| str_field(v, "description"));
    let skip_desc = prop_desc.is_some() && prop_desc == first_desc;
    let mut desc_above = false;
    if let (false, Some(d)) = (skip_desc, prop_desc) {
        out.push_str(&format!("{indent}// {d}\n"));
        desc_above = true;
    }
    if let Some(def) = val.get("default") {
        out.push_str(&format!("{indent}// {}\n", default_text(val, def, true)));
    }
    out.push_str(&format!("{indent}{key}{opt}:\n"));
    let inner = format!("{indent}   ");
    for (i, v) in variants.iter().enumerate() {
        out.push_str(&format!("{indent} | "));
        out.push_str(&with_nullable(v, to_typescript(v, &inner)));
        let mut comments: Vec<String> = Vec::new();
        if !(i == 0 && desc_above) {
            if let Some(d) = str_field(v, "description") {
                if Some(d) != prop_desc {
                    comments.push(d.to_string());
                }
            }
        }
        if let Some(def) = v.get("default") {
            comments.push(default_text(v, def, true));
        }
        if !comments.is_empty() {
            out.push_str(" // ");
            out.push_str(&comments.join(" "));
        }
        out.push('\n');
    }
    out.push_str(&format!("{indent},\n"));
}
