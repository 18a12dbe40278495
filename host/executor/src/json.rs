//! JSON values to and from a task's postcard bytes, following the type
//! description its module carries (see `asyncer_protocol::schema`).
//!
//! The mapping, the same both ways:
//!
//! | type | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | integers up to 64 bits | numbers (checked against the type's range) |
//! | `u128`, `i128` | decimal strings, `"333333283333335000000"` (a number is accepted as input when it fits in 64 bits) |
//! | `f32`, `f64` | numbers |
//! | `char`, `String` | strings |
//! | bytes, `Vec<u8>` | arrays of numbers 0..=255 |
//! | `()`, unit struct | `null` |
//! | `Option<T>` | `null` or the value |
//! | sequences, tuples, tuple structs | arrays |
//! | newtype struct | the inner value |
//! | struct | an object with every field (unknown fields refused) |
//! | map | an object when keys are strings, else an array of `[key, value]` pairs |
//! | enum | `"Variant"` for a unit variant, else `{"Variant": body}` (serde_json's default) |
//!
//! Errors name where the value went wrong: `at .items[2].uid: expected a
//! string, found the number 5`.

use std::fmt::Write as _;

use asyncer_protocol::schema::{Int, TypeDesc, Variant, MAX_TYPE_DEPTH};
use serde_json::{Map, Number, Value};

/// The postcard encoding of `value` as type `ty`.
///
/// # Errors
/// Where and why `value` does not fit `ty`.
pub(crate) fn encode(ty: &TypeDesc, value: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut path = String::new();
    Encoder {
        out: &mut out,
        path: &mut path,
    }
    .value(ty, value, 0)?;
    Ok(out)
}

/// The JSON value of `bytes`, the postcard encoding of type `ty`.
///
/// # Errors
/// Where and why the bytes do not decode as `ty`, or are longer.
pub(crate) fn decode(ty: &TypeDesc, bytes: &[u8]) -> Result<Value, String> {
    let mut path = String::new();
    let mut decoder = Decoder {
        bytes,
        at: 0,
        path: &mut path,
    };
    let value = decoder.value(ty, 0)?;
    if decoder.at != bytes.len() {
        return Err(format!(
            "{} bytes are left after the value",
            bytes.len() - decoder.at
        ));
    }
    Ok(value)
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "the top"
    } else {
        path
    }
}

fn varint(out: &mut Vec<u8>, mut value: u128) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Both directions keep the path to the value at hand, for their errors.
trait Located: Sized {
    fn path(&mut self) -> &mut String;

    /// Runs `f` with `segment` appended to the path.
    fn nested<T>(
        &mut self,
        segment: std::fmt::Arguments<'_>,
        f: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        let len = self.path().len();
        let _ = self.path().write_fmt(segment);
        let result = f(self);
        self.path().truncate(len);
        result
    }
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    path: &'a mut String,
}

impl Located for Encoder<'_> {
    fn path(&mut self) -> &mut String {
        self.path
    }
}

impl Encoder<'_> {
    fn fail(&self, expected: &str, found: &Value) -> String {
        format!(
            "at {}: expected {expected}, found {}",
            at(self.path),
            describe(found)
        )
    }

    fn value(&mut self, ty: &TypeDesc, value: &Value, depth: usize) -> Result<(), String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(format!("at {}: nested too deeply", at(self.path)));
        }
        let depth = depth + 1;
        match ty {
            TypeDesc::Bool => {
                let b = value
                    .as_bool()
                    .ok_or_else(|| self.fail("a boolean", value))?;
                self.out.push(u8::from(b));
            }
            TypeDesc::Int(int) => self.int(*int, value)?,
            TypeDesc::F32 => {
                let f = value.as_f64().ok_or_else(|| self.fail("a number", value))?;
                self.out.extend_from_slice(&(f as f32).to_le_bytes());
            }
            TypeDesc::F64 => {
                let f = value.as_f64().ok_or_else(|| self.fail("a number", value))?;
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            TypeDesc::Char => {
                let text = value.as_str().filter(|s| s.chars().count() == 1);
                let text = text.ok_or_else(|| self.fail("a one-character string", value))?;
                self.bytes(text.as_bytes());
            }
            TypeDesc::String => {
                let text = value.as_str().ok_or_else(|| self.fail("a string", value))?;
                self.bytes(text.as_bytes());
            }
            TypeDesc::Bytes => {
                let items = value
                    .as_array()
                    .ok_or_else(|| self.fail("an array of bytes", value))?;
                let mut bytes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let byte = item.as_u64().and_then(|b| u8::try_from(b).ok());
                    let byte = byte.ok_or_else(|| {
                        format!(
                            "at {}[{i}]: expected a byte (0..=255), found {}",
                            self.path,
                            describe(item)
                        )
                    })?;
                    bytes.push(byte);
                }
                self.bytes(&bytes);
            }
            TypeDesc::Unit | TypeDesc::UnitStruct(_) => {
                if !value.is_null() {
                    return Err(self.fail("null", value));
                }
            }
            TypeDesc::Option(inner) => {
                if value.is_null() {
                    self.out.push(0);
                } else {
                    self.out.push(1);
                    self.value(inner, value, depth)?;
                }
            }
            TypeDesc::Seq(inner) => {
                let items = value
                    .as_array()
                    .ok_or_else(|| self.fail("an array", value))?;
                varint(self.out, items.len() as u128);
                for (i, item) in items.iter().enumerate() {
                    self.nested(format_args!("[{i}]"), |e| e.value(inner, item, depth))?;
                }
            }
            TypeDesc::Tuple(items) | TypeDesc::TupleStruct(_, items) => {
                self.items(items, value, depth)?;
            }
            TypeDesc::NewtypeStruct(_, inner) => self.value(inner, value, depth)?,
            TypeDesc::Struct(_, fields) => self.fields(fields, value, depth)?,
            TypeDesc::Map(key, val) => self.map(key, val, value, depth)?,
            TypeDesc::Enum(_, variants) => self.variant(variants, value, depth)?,
            TypeDesc::Opaque(name) => {
                return Err(format!(
                    "at {}: the type `{name}` has no description, so no JSON form",
                    at(self.path)
                ))
            }
        }
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) {
        varint(self.out, bytes.len() as u128);
        self.out.extend_from_slice(bytes);
    }

    fn int(&mut self, int: Int, value: &Value) -> Result<(), String> {
        let (min, max) = int.range();
        let wide = matches!(int, Int::I128 | Int::U128);
        // 128-bit values come as strings (or numbers when they fit).
        let parsed: Option<Result<i128, u128>> = match value {
            Value::Number(n) => n
                .as_u64()
                .map(|u| Err(u128::from(u)))
                .or_else(|| n.as_i64().map(|i| Ok(i128::from(i)))),
            Value::String(s) if wide => s
                .parse::<u128>()
                .map(Err)
                .ok()
                .or_else(|| s.parse::<i128>().ok().map(Ok)),
            _ => None,
        };
        let expected = if wide {
            format!("an integer ({}, as a string or a number)", int.name())
        } else {
            format!("an integer ({})", int.name())
        };
        let out_of_range = || {
            format!(
                "at {}: {} is out of range for {} ({min}..={max})",
                at(self.path),
                describe(value),
                int.name()
            )
        };
        match parsed {
            None => Err(self.fail(&expected, value)),
            // Non-negative.
            Some(Err(u)) => {
                if u > max {
                    return Err(out_of_range());
                }
                match int {
                    Int::U8 => self.out.push(u as u8),
                    Int::I8 => self.out.push(u as i8 as u8),
                    _ if int.signed() => varint(self.out, u << 1),
                    _ => varint(self.out, u),
                }
                Ok(())
            }
            Some(Ok(i)) => {
                if i < min {
                    return Err(out_of_range());
                }
                match int {
                    Int::I8 => self.out.push(i as i8 as u8),
                    // Zigzag.
                    _ => varint(self.out, ((i << 1) ^ (i >> 127)) as u128),
                }
                Ok(())
            }
        }
    }

    fn items(&mut self, items: &[TypeDesc], value: &Value, depth: usize) -> Result<(), String> {
        let expected = format!("an array of {}", items.len());
        let values = value
            .as_array()
            .filter(|values| values.len() == items.len())
            .ok_or_else(|| self.fail(&expected, value))?;
        for (i, (ty, item)) in items.iter().zip(values).enumerate() {
            self.nested(format_args!("[{i}]"), |e| e.value(ty, item, depth))?;
        }
        Ok(())
    }

    fn fields(
        &mut self,
        fields: &[(String, TypeDesc)],
        value: &Value,
        depth: usize,
    ) -> Result<(), String> {
        let object = value
            .as_object()
            .ok_or_else(|| self.fail("an object", value))?;
        if let Some(unknown) = object.keys().find(|k| !fields.iter().any(|(f, _)| f == *k)) {
            let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
            return Err(format!(
                "at {}: unknown field `{unknown}` (the fields are: {})",
                at(self.path),
                names.join(", ")
            ));
        }
        for (name, ty) in fields {
            let field = object.get(name);
            self.nested(format_args!(".{name}"), |e| match field {
                Some(field) => e.value(ty, field, depth),
                // A missing optional field is `None`, as serde_json does.
                None if matches!(ty, TypeDesc::Option(_)) => {
                    e.out.push(0);
                    Ok(())
                }
                None => Err(format!("at {}: missing field", e.path)),
            })?;
        }
        Ok(())
    }

    fn map(
        &mut self,
        key: &TypeDesc,
        val: &TypeDesc,
        value: &Value,
        depth: usize,
    ) -> Result<(), String> {
        match value {
            Value::Object(object) if matches!(key, TypeDesc::String) => {
                varint(self.out, object.len() as u128);
                for (k, v) in object {
                    self.bytes(k.as_bytes());
                    self.nested(format_args!(".{k}"), |e| e.value(val, v, depth))?;
                }
            }
            Value::Array(pairs) => {
                varint(self.out, pairs.len() as u128);
                let pair = [key.clone(), val.clone()];
                for (i, item) in pairs.iter().enumerate() {
                    self.nested(format_args!("[{i}]"), |e| e.items(&pair, item, depth))?;
                }
            }
            _ => return Err(self.fail("an object, or an array of [key, value] pairs", value)),
        }
        Ok(())
    }

    fn variant(
        &mut self,
        variants: &[(String, Variant)],
        value: &Value,
        depth: usize,
    ) -> Result<(), String> {
        let names = || {
            variants
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, body) = match value {
            Value::String(name) => (name.as_str(), None),
            Value::Object(object) if object.len() == 1 => {
                let (name, body) = object.iter().next().expect("one entry");
                (name.as_str(), Some(body))
            }
            _ => {
                return Err(self.fail(
                    &format!(
                        "a variant name or {{\"Variant\": value}} (one of {})",
                        names()
                    ),
                    value,
                ))
            }
        };
        let Some(index) = variants.iter().position(|(n, _)| n == name) else {
            return Err(format!(
                "at {}: unknown variant `{name}` (one of {})",
                at(self.path),
                names()
            ));
        };
        varint(self.out, index as u128);
        let (_, kind) = &variants[index];
        self.nested(format_args!(".{name}"), |e| match (kind, body) {
            (Variant::Unit, None | Some(Value::Null)) => Ok(()),
            (Variant::Newtype(ty), Some(body)) => e.value(ty, body, depth),
            (Variant::Tuple(items), Some(body)) => e.items(items, body, depth),
            (Variant::Struct(fields), Some(body)) => e.fields(fields, body, depth),
            (Variant::Unit, Some(body)) => Err(e.fail("no value (a unit variant)", body)),
            (_, None) => Err(format!("at {}: this variant needs a value", e.path)),
        })
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a mut String,
}

impl Located for Decoder<'_> {
    fn path(&mut self) -> &mut String {
        self.path
    }
}

impl Decoder<'_> {
    fn fail(&self, message: impl std::fmt::Display) -> String {
        format!("at {} (byte {}): {message}", at(self.path), self.at)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.fail("the bytes end too early"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self, max_bytes: usize) -> Result<u128, String> {
        let mut value: u128 = 0;
        for i in 0..max_bytes {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fail("a varint is too long"))
    }

    fn len(&mut self) -> Result<usize, String> {
        let len = self.varint(10)?;
        // Every item takes at least a byte, but units: bound by what is left
        // (times a generous factor) so a hostile length cannot allocate.
        usize::try_from(len)
            .ok()
            .filter(|len| *len <= (self.bytes.len() - self.at).saturating_mul(8) + 64)
            .ok_or_else(|| self.fail(format!("a length of {len} is more than the bytes hold")))
    }

    fn text(&mut self) -> Result<String, String> {
        let len = self.len()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
    }

    fn value(&mut self, ty: &TypeDesc, depth: usize) -> Result<Value, String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        let depth = depth + 1;
        Ok(match ty {
            TypeDesc::Bool => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(self.fail(format!("{other} is not a boolean"))),
            },
            TypeDesc::Int(int) => self.int(*int)?,
            TypeDesc::F32 => {
                let bytes: [u8; 4] = self.take(4)?.try_into().expect("four bytes");
                float(f64::from(f32::from_le_bytes(bytes)))
            }
            TypeDesc::F64 => {
                let bytes: [u8; 8] = self.take(8)?.try_into().expect("eight bytes");
                float(f64::from_le_bytes(bytes))
            }
            TypeDesc::Char | TypeDesc::String => Value::String(self.text()?),
            TypeDesc::Bytes => {
                let len = self.len()?;
                Value::Array(self.take(len)?.iter().map(|b| Value::from(*b)).collect())
            }
            TypeDesc::Unit | TypeDesc::UnitStruct(_) => Value::Null,
            TypeDesc::Option(inner) => match self.byte()? {
                0 => Value::Null,
                1 => self.value(inner, depth)?,
                other => return Err(self.fail(format!("{other} is not an option tag"))),
            },
            TypeDesc::Seq(inner) => {
                let len = self.len()?;
                let mut items = Vec::new();
                for i in 0..len {
                    items.push(self.nested(format_args!("[{i}]"), |d| d.value(inner, depth))?);
                }
                Value::Array(items)
            }
            TypeDesc::Tuple(items) | TypeDesc::TupleStruct(_, items) => self.items(items, depth)?,
            TypeDesc::NewtypeStruct(_, inner) => self.value(inner, depth)?,
            TypeDesc::Struct(_, fields) => self.fields(fields, depth)?,
            TypeDesc::Map(key, val) => {
                let len = self.len()?;
                let string_keys = matches!(**key, TypeDesc::String);
                let (mut object, mut pairs) = (Map::new(), Vec::new());
                for i in 0..len {
                    let k = self.nested(format_args!("[{i}]"), |d| d.value(key, depth))?;
                    let v = self.nested(format_args!("[{i}]"), |d| d.value(val, depth))?;
                    match (string_keys, k) {
                        (true, Value::String(k)) => {
                            object.insert(k, v);
                        }
                        (_, k) => pairs.push(Value::Array(vec![k, v])),
                    }
                }
                if string_keys {
                    Value::Object(object)
                } else {
                    Value::Array(pairs)
                }
            }
            TypeDesc::Enum(_, variants) => {
                let index = self.varint(5)?;
                let (name, kind) = usize::try_from(index)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| self.fail(format!("variant {index} does not exist")))?;
                let body = self.nested(format_args!(".{name}"), |d| match kind {
                    Variant::Unit => Ok(None),
                    Variant::Newtype(ty) => d.value(ty, depth).map(Some),
                    Variant::Tuple(items) => d.items(items, depth).map(Some),
                    Variant::Struct(fields) => d.fields(fields, depth).map(Some),
                })?;
                match body {
                    None => Value::String(name.clone()),
                    Some(body) => Value::Object(Map::from_iter([(name.clone(), body)])),
                }
            }
            TypeDesc::Opaque(name) => {
                return Err(self.fail(format!(
                    "the type `{name}` has no description, so no JSON form"
                )))
            }
        })
    }

    fn int(&mut self, int: Int) -> Result<Value, String> {
        let raw = match int {
            Int::U8 | Int::I8 => u128::from(self.byte()?),
            Int::U16 | Int::I16 => self.varint(3)?,
            Int::U32 | Int::I32 => self.varint(5)?,
            Int::U64 | Int::I64 | Int::Usize | Int::Isize => self.varint(10)?,
            Int::U128 | Int::I128 => self.varint(19)?,
        };
        let (min, max) = int.range();
        let value: Result<i128, u128> = match int {
            Int::I8 => Ok(i128::from(raw as u8 as i8)),
            _ if int.signed() => Ok(((raw >> 1) as i128) ^ -((raw & 1) as i128)),
            _ => Err(raw),
        };
        let in_range = match value {
            Ok(i) => i >= min && (i < 0 || i as u128 <= max),
            Err(u) => u <= max,
        };
        if !in_range {
            return Err(self.fail(format!("the value is out of range for {}", int.name())));
        }
        Ok(match (int, value) {
            (Int::U128 | Int::I128, Ok(i)) => Value::String(i.to_string()),
            (Int::U128 | Int::I128, Err(u)) => Value::String(u.to_string()),
            (_, Ok(i)) => Value::from(i as i64),
            (_, Err(u)) => Value::from(u as u64),
        })
    }

    fn items(&mut self, items: &[TypeDesc], depth: usize) -> Result<Value, String> {
        let mut values = Vec::with_capacity(items.len());
        for (i, ty) in items.iter().enumerate() {
            values.push(self.nested(format_args!("[{i}]"), |d| d.value(ty, depth))?);
        }
        Ok(Value::Array(values))
    }

    fn fields(&mut self, fields: &[(String, TypeDesc)], depth: usize) -> Result<Value, String> {
        let mut object = Map::new();
        for (name, ty) in fields {
            let value = self.nested(format_args!(".{name}"), |d| d.value(ty, depth))?;
            object.insert(name.clone(), value);
        }
        Ok(Value::Object(object))
    }
}

/// A float as JSON: a number, or `null` for NaN and infinities (which JSON
/// cannot write), as serde_json does.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    fn named(fields: &[(&str, TypeDesc)]) -> Vec<(String, TypeDesc)> {
        fields
            .iter()
            .map(|(name, ty)| ((*name).to_owned(), ty.clone()))
            .collect()
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Job {
        uid: String,
        n: u64,
        weights: Vec<i32>,
        note: Option<String>,
        big: u128,
        small: i8,
        shape: Shape,
        ratio: f64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Square(u16),
        Rect { w: u16, h: u16 },
        Pair(bool, char),
    }

    fn job_type() -> TypeDesc {
        let shape = TypeDesc::Enum(
            "Shape".into(),
            vec![
                ("Empty".into(), Variant::Unit),
                ("Square".into(), Variant::Newtype(TypeDesc::Int(Int::U16))),
                (
                    "Rect".into(),
                    Variant::Struct(named(&[
                        ("w", TypeDesc::Int(Int::U16)),
                        ("h", TypeDesc::Int(Int::U16)),
                    ])),
                ),
                (
                    "Pair".into(),
                    Variant::Tuple(vec![TypeDesc::Bool, TypeDesc::Char]),
                ),
            ],
        );
        TypeDesc::Struct(
            "Job".into(),
            named(&[
                ("uid", TypeDesc::String),
                ("n", TypeDesc::Int(Int::U64)),
                ("weights", TypeDesc::Seq(Box::new(TypeDesc::Int(Int::I32)))),
                ("note", TypeDesc::Option(Box::new(TypeDesc::String))),
                ("big", TypeDesc::Int(Int::U128)),
                ("small", TypeDesc::Int(Int::I8)),
                ("shape", shape),
                ("ratio", TypeDesc::F64),
            ]),
        )
    }

    #[test]
    fn json_and_serde_agree_on_the_bytes_both_ways() {
        let jobs = [
            Job {
                uid: "a".into(),
                n: 10_000_000,
                weights: vec![-1, 0, i32::MAX],
                note: None,
                big: 333_333_283_333_335_000_000,
                small: -128,
                shape: Shape::Rect { w: 3, h: 4 },
                ratio: 0.5,
            },
            Job {
                uid: "ünïcode".into(),
                n: u64::MAX,
                weights: vec![],
                note: Some("x".into()),
                big: u128::MAX,
                small: 127,
                shape: Shape::Pair(true, 'λ'),
                ratio: -1e300,
            },
            Job {
                uid: String::new(),
                n: 0,
                weights: vec![i32::MIN],
                note: None,
                big: 0,
                small: 0,
                shape: Shape::Empty,
                ratio: 0.0,
            },
        ];
        let ty = job_type();
        for job in jobs {
            let bytes = postcard::to_allocvec(&job).unwrap();
            let value = decode(&ty, &bytes).unwrap();
            // u128 as a string (which serde_json cannot hold past u64);
            // everything else as serde_json writes it.
            let mut expected = serde_json::to_value(Job {
                big: 0,
                ..job.clone()
            })
            .unwrap();
            expected["big"] = json!(job.big.to_string());
            assert_eq!(value, expected);
            assert_eq!(encode(&ty, &value).unwrap(), bytes, "{value}");
        }
    }

    #[test]
    fn the_seeds_task_speaks_json() {
        let input = TypeDesc::Struct(
            "HeavyInput".into(),
            named(&[("uid", TypeDesc::String), ("n", TypeDesc::Int(Int::U64))]),
        );
        let bytes = encode(&input, &json!({"uid": "a", "n": 10_000_000})).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&("a", 10_000_000u64)).unwrap());
        let output = TypeDesc::Struct(
            "HeavyOutput".into(),
            named(&[
                ("uid", TypeDesc::String),
                ("result", TypeDesc::Int(Int::U128)),
            ]),
        );
        let bytes = postcard::to_allocvec(&("a", 333_333_283_333_335_000_000u128)).unwrap();
        assert_eq!(
            decode(&output, &bytes).unwrap(),
            json!({"uid": "a", "result": "333333283333335000000"})
        );
        // A u128 that fits may come as a number.
        let bytes = encode(&output, &json!({"uid": "b", "result": 7})).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&("b", 7u128)).unwrap());
    }

    #[test]
    fn values_that_do_not_fit_say_where_and_why() {
        let ty = job_type();
        let good = json!({"uid": "a", "n": 1, "weights": [1], "note": null, "big": "1",
                          "small": 1, "shape": "Empty", "ratio": 1.0});
        assert!(encode(&ty, &good).is_ok());
        let cases = [
            (json!({"uid": 5}), "at .uid: expected a string, found the number 5"),
            (json!({"n": -1}), "at .n: the number -1 is out of range for u64"),
            (json!({"n": "7"}), "at .n: expected an integer (u64), found the string \"7\""),
            (json!({"weights": [1, "x"]}), "at .weights[1]: expected an integer (i32)"),
            (json!({"weights": [4294967296i64]}), "at .weights[0]: the number 4294967296 is out of range for i32"),
            (json!({"small": 200}), "at .small: the number 200 is out of range for i8"),
            (json!({"big": "-1"}), "at .big: the string \"-1\" is out of range for u128"),
            (json!({"big": "lots"}), "at .big: expected an integer (u128, as a string or a number)"),
            (json!({"shape": "Circle"}), "at .shape: unknown variant `Circle` (one of Empty, Square, Rect, Pair)"),
            (json!({"shape": {"Rect": {"w": 1}}}), "at .shape.Rect.h: missing field"),
            (json!({"shape": {"Pair": [true, "ab"]}}), "at .shape.Pair[1]: expected a one-character string"),
            (json!({"shape": "Square"}), "at .shape.Square: this variant needs a value"),
            (json!({"extra": 1}), "at the top: unknown field `extra` (the fields are: uid, n, weights, note, big, small, shape, ratio)"),
        ];
        for (patch, expected) in cases {
            let mut value = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            let error = encode(&ty, &value).unwrap_err();
            assert!(error.starts_with(expected), "{error}\n  wanted: {expected}");
        }
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("n");
        assert_eq!(encode(&ty, &missing).unwrap_err(), "at .n: missing field");
        // An optional field may be left out.
        let mut optional = good;
        optional.as_object_mut().unwrap().remove("note");
        assert!(encode(&ty, &optional).is_ok());
        assert!(encode(&TypeDesc::Unit, &json!(1))
            .unwrap_err()
            .starts_with("at the top: expected null"));
    }

    #[test]
    fn bytes_that_do_not_decode_are_errors_not_panics() {
        let ty = job_type();
        let bytes = postcard::to_allocvec(&Job {
            uid: "a".into(),
            n: 1,
            weights: vec![1, 2],
            note: Some("n".into()),
            big: 5,
            small: 1,
            shape: Shape::Square(2),
            ratio: 2.0,
        })
        .unwrap();
        assert!(decode(&ty, &bytes).is_ok());
        for end in 0..bytes.len() {
            assert!(decode(&ty, &bytes[..end]).is_err());
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xff;
            let _ = decode(&ty, &damaged);
        }
        let longer = [bytes.clone(), vec![0]].concat();
        assert_eq!(
            decode(&ty, &longer).unwrap_err(),
            "1 bytes are left after the value"
        );
        // A huge length is refused before anything is allocated.
        let huge = decode(
            &TypeDesc::Seq(Box::new(TypeDesc::Unit)),
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        );
        assert!(huge.unwrap_err().contains("more than the bytes hold"));
        // A map with string keys is an object, other keys pairs.
        let map = TypeDesc::Map(Box::new(TypeDesc::String), Box::new(TypeDesc::Int(Int::U8)));
        let bytes = postcard::to_allocvec(&std::collections::BTreeMap::from([("k", 1u8)])).unwrap();
        assert_eq!(decode(&map, &bytes).unwrap(), json!({"k": 1}));
        assert_eq!(encode(&map, &json!({"k": 1})).unwrap(), bytes);
        let pairs = TypeDesc::Map(Box::new(TypeDesc::Int(Int::U8)), Box::new(TypeDesc::Bool));
        let bytes =
            postcard::to_allocvec(&std::collections::BTreeMap::from([(3u8, true)])).unwrap();
        assert_eq!(decode(&pairs, &bytes).unwrap(), json!([[3, true]]));
        assert_eq!(encode(&pairs, &json!([[3, true]])).unwrap(), bytes);
    }
}
