//! Writes a task's type description (asyncer's `asyncer.schema` custom
//! section, see `asyncer_protocol::schema`) from `postcard-schema`'s
//! [`NamedType`], at compile time: `#[task]` puts one entry per task in the
//! section, so that hosts can speak JSON to the task.

use postcard_schema::schema::{DataModelType, DataModelVariant, NamedType, NamedValue};

// The section format's tags (kept equal to `asyncer_protocol::schema::tag`
// by a test).
const VERSION: u8 = 0x01;
const BOOL: u8 = 0x00;
const I8: u8 = 0x01;
const I16: u8 = 0x02;
const I32: u8 = 0x03;
const I64: u8 = 0x04;
const I128: u8 = 0x05;
const U8: u8 = 0x06;
const U16: u8 = 0x07;
const U32: u8 = 0x08;
const U64: u8 = 0x09;
const U128: u8 = 0x0a;
const USIZE: u8 = 0x0b;
const ISIZE: u8 = 0x0c;
const F32: u8 = 0x0d;
const F64: u8 = 0x0e;
const CHAR: u8 = 0x0f;
const STRING: u8 = 0x10;
const BYTES: u8 = 0x11;
const UNIT: u8 = 0x12;
const OPTION: u8 = 0x13;
const SEQ: u8 = 0x14;
const MAP: u8 = 0x15;
const TUPLE: u8 = 0x16;
const UNIT_STRUCT: u8 = 0x17;
const NEWTYPE_STRUCT: u8 = 0x18;
const TUPLE_STRUCT: u8 = 0x19;
const STRUCT: u8 = 0x1a;
const ENUM: u8 = 0x1b;
const OPAQUE: u8 = 0x1f;
const VARIANT_UNIT: u8 = 0x00;
const VARIANT_NEWTYPE: u8 = 0x01;
const VARIANT_TUPLE: u8 = 0x02;
const VARIANT_STRUCT: u8 = 0x03;

/// The length of the entry for task `task` with these types.
pub const fn entry_len(task: &str, input: &NamedType, output: &NamedType) -> usize {
    let mut out = Out {
        buf: &mut [],
        at: 0,
    };
    out.entry(task, input, output);
    out.at
}

/// The entry for task `task` with these types; `N` must be
/// [`entry_len`] of the same arguments.
pub const fn entry<const N: usize>(task: &str, input: &NamedType, output: &NamedType) -> [u8; N] {
    let mut buf = [0u8; N];
    let mut out = Out {
        buf: &mut buf,
        at: 0,
    };
    out.entry(task, input, output);
    assert!(out.at == N, "entry_len and entry disagree");
    buf
}

/// A writer that only counts when its buffer is empty.
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    const fn byte(&mut self, byte: u8) {
        if !self.buf.is_empty() {
            self.buf[self.at] = byte;
        }
        self.at += 1;
    }

    const fn varint(&mut self, mut value: usize) {
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.byte(low);
                return;
            }
            self.byte(low | 0x80);
        }
    }

    const fn string(&mut self, text: &str) {
        let bytes = text.as_bytes();
        self.varint(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            self.byte(bytes[i]);
            i += 1;
        }
    }

    const fn entry(&mut self, task: &str, input: &NamedType, output: &NamedType) {
        self.byte(VERSION);
        self.string(task);
        self.ty(input);
        self.ty(output);
    }

    const fn types(&mut self, types: &[&NamedType]) {
        self.varint(types.len());
        let mut i = 0;
        while i < types.len() {
            self.ty(types[i]);
            i += 1;
        }
    }

    const fn fields(&mut self, fields: &[&NamedValue]) {
        self.varint(fields.len());
        let mut i = 0;
        while i < fields.len() {
            self.string(fields[i].name);
            self.ty(fields[i].ty);
            i += 1;
        }
    }

    const fn ty(&mut self, ty: &NamedType) {
        match *ty.ty {
            DataModelType::Bool => self.byte(BOOL),
            DataModelType::I8 => self.byte(I8),
            DataModelType::U8 => self.byte(U8),
            DataModelType::I16 => self.byte(I16),
            DataModelType::I32 => self.byte(I32),
            DataModelType::I64 => self.byte(I64),
            DataModelType::I128 => self.byte(I128),
            DataModelType::U16 => self.byte(U16),
            DataModelType::U32 => self.byte(U32),
            DataModelType::U64 => self.byte(U64),
            DataModelType::U128 => self.byte(U128),
            DataModelType::Usize => self.byte(USIZE),
            DataModelType::Isize => self.byte(ISIZE),
            DataModelType::F32 => self.byte(F32),
            DataModelType::F64 => self.byte(F64),
            DataModelType::Char => self.byte(CHAR),
            DataModelType::String => self.byte(STRING),
            DataModelType::ByteArray => self.byte(BYTES),
            DataModelType::Unit => self.byte(UNIT),
            DataModelType::Option(inner) => {
                self.byte(OPTION);
                self.ty(inner);
            }
            DataModelType::Seq(inner) => {
                self.byte(SEQ);
                self.ty(inner);
            }
            DataModelType::Map { key, val } => {
                self.byte(MAP);
                self.ty(key);
                self.ty(val);
            }
            DataModelType::Tuple(items) => {
                self.byte(TUPLE);
                self.types(items);
            }
            DataModelType::UnitStruct => {
                self.byte(UNIT_STRUCT);
                self.string(ty.name);
            }
            DataModelType::NewtypeStruct(inner) => {
                self.byte(NEWTYPE_STRUCT);
                self.string(ty.name);
                self.ty(inner);
            }
            DataModelType::TupleStruct(items) => {
                self.byte(TUPLE_STRUCT);
                self.string(ty.name);
                self.types(items);
            }
            DataModelType::Struct(fields) => {
                self.byte(STRUCT);
                self.string(ty.name);
                self.fields(fields);
            }
            DataModelType::Enum(variants) => {
                self.byte(ENUM);
                self.string(ty.name);
                self.varint(variants.len());
                let mut i = 0;
                while i < variants.len() {
                    self.string(variants[i].name);
                    match *variants[i].ty {
                        DataModelVariant::UnitVariant => self.byte(VARIANT_UNIT),
                        DataModelVariant::NewtypeVariant(inner) => {
                            self.byte(VARIANT_NEWTYPE);
                            self.ty(inner);
                        }
                        DataModelVariant::TupleVariant(items) => {
                            self.byte(VARIANT_TUPLE);
                            self.types(items);
                        }
                        DataModelVariant::StructVariant(fields) => {
                            self.byte(VARIANT_STRUCT);
                            self.fields(fields);
                        }
                    }
                    i += 1;
                }
            }
            DataModelType::Schema => {
                self.byte(OPAQUE);
                self.string(ty.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncer_protocol::schema::{parse_section, tag};
    use postcard_schema::Schema;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Schema)]
    struct Point {
        x: i32,
        label: Option<String>,
    }

    #[derive(Serialize, Deserialize, Schema)]
    enum Shape {
        Empty,
        Dot(Point),
        Line(Point, Point),
        Poly { points: Vec<Point>, closed: bool },
    }

    #[derive(Serialize, Deserialize, Schema)]
    struct Meters(f64);

    const ENTRY_LEN: usize = entry_len("draw", Shape::SCHEMA, <(Meters, u128)>::SCHEMA);
    static ENTRY: [u8; ENTRY_LEN] =
        entry::<ENTRY_LEN>("draw", Shape::SCHEMA, <(Meters, u128)>::SCHEMA);

    #[test]
    fn entries_written_at_compile_time_read_back_as_the_types() {
        let tasks = parse_section(&ENTRY).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task, "draw");
        assert_eq!(
            tasks[0].input.to_string(),
            "enum Shape { Empty, Dot(Point { x: i32, label: Option<String> }), \
             Line(Point { x: i32, label: Option<String> }, Point { x: i32, label: Option<String> }), \
             Poly { points: Vec<Point { x: i32, label: Option<String> }>, closed: bool } }"
        );
        assert_eq!(tasks[0].output.to_string(), "(Meters(f64), u128)");
    }

    #[test]
    fn the_tags_are_the_protocols() {
        let pairs = [
            (BOOL, tag::BOOL),
            (I8, tag::I8),
            (I16, tag::I16),
            (I32, tag::I32),
            (I64, tag::I64),
            (I128, tag::I128),
            (U8, tag::U8),
            (U16, tag::U16),
            (U32, tag::U32),
            (U64, tag::U64),
            (U128, tag::U128),
            (USIZE, tag::USIZE),
            (ISIZE, tag::ISIZE),
            (F32, tag::F32),
            (F64, tag::F64),
            (CHAR, tag::CHAR),
            (STRING, tag::STRING),
            (BYTES, tag::BYTES),
            (UNIT, tag::UNIT),
            (OPTION, tag::OPTION),
            (SEQ, tag::SEQ),
            (MAP, tag::MAP),
            (TUPLE, tag::TUPLE),
            (UNIT_STRUCT, tag::UNIT_STRUCT),
            (NEWTYPE_STRUCT, tag::NEWTYPE_STRUCT),
            (TUPLE_STRUCT, tag::TUPLE_STRUCT),
            (STRUCT, tag::STRUCT),
            (ENUM, tag::ENUM),
            (OPAQUE, tag::OPAQUE),
            (VARIANT_UNIT, tag::VARIANT_UNIT),
            (VARIANT_NEWTYPE, tag::VARIANT_NEWTYPE),
            (VARIANT_TUPLE, tag::VARIANT_TUPLE),
            (VARIANT_STRUCT, tag::VARIANT_STRUCT),
            (VERSION, asyncer_protocol::schema::SCHEMA_VERSION),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs);
        }
    }
}
