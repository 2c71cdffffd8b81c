//! Helpers shared by the integration tests: fixture paths, the gguf-py JSON dumps, and
//! bit-exact value comparison (floats compared by bit pattern so NaN and -0.0 count).
#![allow(dead_code)]

use std::path::PathBuf;

use gguf_format::{Array, GgmlType, GgufWriter, Value, ValueType};
use serde_json::Value as Json;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_json(name: &str) -> Json {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture json");
    serde_json::from_str(&text).expect("valid json")
}

pub fn value_type(name: &str) -> ValueType {
    let id = match name {
        "UINT8" => 0,
        "INT8" => 1,
        "UINT16" => 2,
        "INT16" => 3,
        "UINT32" => 4,
        "INT32" => 5,
        "FLOAT32" => 6,
        "BOOL" => 7,
        "STRING" => 8,
        "ARRAY" => 9,
        "UINT64" => 10,
        "INT64" => 11,
        "FLOAT64" => 12,
        other => panic!("unknown type name {other}"),
    };
    ValueType::from_id(id).unwrap()
}

fn int(j: &Json) -> i128 {
    j.as_i64()
        .map(i128::from)
        .or_else(|| j.as_u64().map(i128::from))
        .expect("integer")
}

/// A tagged JSON value (`{"type", "value"|"bits", "elem"}`) from the gguf-py dump as a [`Value`].
pub fn json_to_value(j: &Json) -> Value {
    let ty = value_type(j["type"].as_str().unwrap());
    let v = &j["value"];
    match ty {
        ValueType::U8 => Value::U8(int(v) as u8),
        ValueType::I8 => Value::I8(int(v) as i8),
        ValueType::U16 => Value::U16(int(v) as u16),
        ValueType::I16 => Value::I16(int(v) as i16),
        ValueType::U32 => Value::U32(int(v) as u32),
        ValueType::I32 => Value::I32(int(v) as i32),
        ValueType::U64 => Value::U64(int(v) as u64),
        ValueType::I64 => Value::I64(int(v) as i64),
        ValueType::F32 => Value::F32(f32::from_bits(int(&j["bits"]) as u32)),
        ValueType::F64 => Value::F64(f64::from_bits(int(&j["bits"]) as u64)),
        ValueType::Bool => Value::Bool(v.as_bool().unwrap()),
        ValueType::String => Value::String(v.as_str().unwrap().to_string()),
        ValueType::Array => {
            let elem = value_type(j["elem"].as_str().unwrap());
            let items: Vec<Value> = v.as_array().unwrap().iter().map(json_to_value).collect();
            Value::Array(array_of(elem, items))
        }
    }
}

/// Builds a typed array from values that all have type `elem`.
pub fn array_of(elem: ValueType, items: Vec<Value>) -> Array {
    macro_rules! collect {
        ($variant:ident) => {
            Array::$variant(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::$variant(x) => x,
                        other => panic!("mixed array: {other:?}"),
                    })
                    .collect(),
            )
        };
    }
    match elem {
        ValueType::U8 => collect!(U8),
        ValueType::I8 => collect!(I8),
        ValueType::U16 => collect!(U16),
        ValueType::I16 => collect!(I16),
        ValueType::U32 => collect!(U32),
        ValueType::I32 => collect!(I32),
        ValueType::F32 => collect!(F32),
        ValueType::Bool => collect!(Bool),
        ValueType::String => collect!(String),
        ValueType::U64 => collect!(U64),
        ValueType::I64 => collect!(I64),
        ValueType::F64 => collect!(F64),
        ValueType::Array => collect!(Array),
    }
}

/// A canonical text form with floats as bit patterns, for bit-exact comparison.
pub fn canon(v: &Value) -> String {
    match v {
        Value::F32(x) => format!("f32:{:#x}", x.to_bits()),
        Value::F64(x) => format!("f64:{:#x}", x.to_bits()),
        Value::Array(a) => canon_array(a),
        other => format!("{other:?}"),
    }
}

pub fn canon_array(a: &Array) -> String {
    let items: Vec<String> = (0..a.len()).map(|i| canon(&a.get(i).unwrap())).collect();
    format!("[{}; {}]", a.elem_type(), items.join(", "))
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A writer holding exactly the content of a gguf-py dump (metadata in order, tensors in order,
/// data from the dump), built without our reader.
pub fn writer_from_dump(dump: &Json) -> GgufWriter {
    let mut w = GgufWriter::new();
    for kv in dump["metadata"].as_array().unwrap() {
        w.add_kv(kv["key"].as_str().unwrap(), json_to_value(kv))
            .unwrap();
    }
    for t in dump["tensors"].as_array().unwrap() {
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let ty = GgmlType::from_id(t["type_id"].as_u64().unwrap() as u32);
        w.add_tensor(
            t["name"].as_str().unwrap(),
            &dims,
            ty,
            hex(t["data_hex"].as_str().unwrap()),
        )
        .unwrap();
    }
    w
}

/// A small xorshift generator for deterministic test content (fixtures must be reproducible).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
