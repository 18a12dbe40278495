//! Type descriptions inside guest modules: what each task's input and output
//! look like, so that callers without the guest's Rust types (a shell, a
//! script, another language) can speak JSON to it.
//!
//! A module carries them in a custom section named [`SCHEMA_SECTION`]: a
//! sequence of entries, one per task, in any order (`#[task]` writes one
//! per task; other toolchains may write the section by hand). The format,
//! all integers unsigned LEB128 varints, strings a varint length then UTF-8:
//!
//! ```text
//! entry   := 0x01 name:string input:type output:type
//! type    := 0x00 bool | 0x01 i8 | 0x02 i16 | 0x03 i32 | 0x04 i64 | 0x05 i128
//!          | 0x06 u8 | 0x07 u16 | 0x08 u32 | 0x09 u64 | 0x0a u128
//!          | 0x0b usize | 0x0c isize | 0x0d f32 | 0x0e f64 | 0x0f char
//!          | 0x10 string | 0x11 bytes | 0x12 unit
//!          | 0x13 option:type | 0x14 seq:type | 0x15 map:type type
//!          | 0x16 tuple:n type{n}
//!          | 0x17 unit-struct:string | 0x18 newtype-struct:string type
//!          | 0x19 tuple-struct:string n type{n}
//!          | 0x1a struct:string n (field:string type){n}
//!          | 0x1b enum:string n (variant:string variant-body){n}
//!          | 0x1f opaque:string          (not describable; no JSON)
//! variant-body := 0x00 unit | 0x01 newtype:type | 0x02 tuple:n type{n}
//!               | 0x03 struct:n (field:string type){n}
//! ```
//!
//! Each type stands for its postcard encoding (serde's data model as
//! postcard writes it): see [`TypeDesc`].

use std::fmt;

/// The name of the custom section that describes a module's task types.
pub const SCHEMA_SECTION: &str = "asyncer.schema";

/// The first byte of each entry: the format's version.
pub const SCHEMA_VERSION: u8 = 0x01;

/// The deepest nesting of types a description may have.
pub const MAX_TYPE_DEPTH: usize = 64;

/// Type tags of the section format (see the [module documentation](self)).
#[allow(missing_docs)]
pub mod tag {
    pub const BOOL: u8 = 0x00;
    pub const I8: u8 = 0x01;
    pub const I16: u8 = 0x02;
    pub const I32: u8 = 0x03;
    pub const I64: u8 = 0x04;
    pub const I128: u8 = 0x05;
    pub const U8: u8 = 0x06;
    pub const U16: u8 = 0x07;
    pub const U32: u8 = 0x08;
    pub const U64: u8 = 0x09;
    pub const U128: u8 = 0x0a;
    pub const USIZE: u8 = 0x0b;
    pub const ISIZE: u8 = 0x0c;
    pub const F32: u8 = 0x0d;
    pub const F64: u8 = 0x0e;
    pub const CHAR: u8 = 0x0f;
    pub const STRING: u8 = 0x10;
    pub const BYTES: u8 = 0x11;
    pub const UNIT: u8 = 0x12;
    pub const OPTION: u8 = 0x13;
    pub const SEQ: u8 = 0x14;
    pub const MAP: u8 = 0x15;
    pub const TUPLE: u8 = 0x16;
    pub const UNIT_STRUCT: u8 = 0x17;
    pub const NEWTYPE_STRUCT: u8 = 0x18;
    pub const TUPLE_STRUCT: u8 = 0x19;
    pub const STRUCT: u8 = 0x1a;
    pub const ENUM: u8 = 0x1b;
    pub const OPAQUE: u8 = 0x1f;
    pub const VARIANT_UNIT: u8 = 0x00;
    pub const VARIANT_NEWTYPE: u8 = 0x01;
    pub const VARIANT_TUPLE: u8 = 0x02;
    pub const VARIANT_STRUCT: u8 = 0x03;
}

/// Integer kinds: how many bits, and whether signed (zigzag on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Int {
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    Usize,
    Isize,
}

impl Int {
    /// Whether the type is signed.
    pub fn signed(self) -> bool {
        matches!(
            self,
            Int::I8 | Int::I16 | Int::I32 | Int::I64 | Int::I128 | Int::Isize
        )
    }

    /// Its Rust name.
    pub fn name(self) -> &'static str {
        match self {
            Int::I8 => "i8",
            Int::I16 => "i16",
            Int::I32 => "i32",
            Int::I64 => "i64",
            Int::I128 => "i128",
            Int::U8 => "u8",
            Int::U16 => "u16",
            Int::U32 => "u32",
            Int::U64 => "u64",
            Int::U128 => "u128",
            Int::Usize => "usize",
            Int::Isize => "isize",
        }
    }

    /// The smallest and largest values, as i128 and u128 bounds.
    pub fn range(self) -> (i128, u128) {
        match self {
            Int::I8 => (i8::MIN.into(), i8::MAX as u128),
            Int::I16 => (i16::MIN.into(), i16::MAX as u128),
            Int::I32 => (i32::MIN.into(), i32::MAX as u128),
            Int::I64 | Int::Isize => (i64::MIN.into(), i64::MAX as u128),
            Int::I128 => (i128::MIN, i128::MAX as u128),
            Int::U8 => (0, u8::MAX.into()),
            Int::U16 => (0, u16::MAX.into()),
            Int::U32 => (0, u32::MAX.into()),
            Int::U64 | Int::Usize => (0, u64::MAX.into()),
            Int::U128 => (0, u128::MAX),
        }
    }
}

/// One type of a task's input or output, as its postcard encoding sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeDesc {
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// An integer: `u8`/`i8` one byte, the others varints (signed ones
    /// zigzag).
    Int(Int),
    /// `f32`: four bytes, little-endian.
    F32,
    /// `f64`: eight bytes, little-endian.
    F64,
    /// `char`: as a one-character string.
    Char,
    /// `String`: varint length, UTF-8.
    String,
    /// A byte string (`serde_bytes`): varint length, bytes.
    Bytes,
    /// `()`: nothing.
    Unit,
    /// `Option<T>`: 0, or 1 then the value.
    Option(Box<TypeDesc>),
    /// `Vec<T>` and other sequences: varint length, items.
    Seq(Box<TypeDesc>),
    /// Maps: varint length, then key and value pairs.
    Map(Box<TypeDesc>, Box<TypeDesc>),
    /// A tuple: its items, no length.
    Tuple(Vec<TypeDesc>),
    /// `struct S;`: nothing.
    UnitStruct(String),
    /// `struct S(T);`: the inner value.
    NewtypeStruct(String, Box<TypeDesc>),
    /// `struct S(A, B);`: the items.
    TupleStruct(String, Vec<TypeDesc>),
    /// `struct S { a: A }`: the fields in order.
    Struct(String, Vec<(String, TypeDesc)>),
    /// An enum: varint variant index, then the variant's body.
    Enum(String, Vec<(String, Variant)>),
    /// Something the guest's toolchain could not describe.
    Opaque(String),
}

/// The body of an enum variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// `A`
    Unit,
    /// `A(T)`
    Newtype(TypeDesc),
    /// `A(T, U)`
    Tuple(Vec<TypeDesc>),
    /// `A { x: T }`
    Struct(Vec<(String, TypeDesc)>),
}

/// The described input and output of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTypes {
    /// The task name.
    pub task: String,
    /// The input type.
    pub input: TypeDesc,
    /// The output type.
    pub output: TypeDesc,
}

/// Reads a [`SCHEMA_SECTION`]'s entries.
///
/// # Errors
/// The section does not follow the format (with the offset), nests deeper
/// than [`MAX_TYPE_DEPTH`], or describes one task twice.
///
/// # Examples
/// ```
/// use asyncer_protocol::schema::{parse_section, tag, TypeDesc, Int};
/// let section = [0x01, 3, b'a', b'd', b'd', tag::TUPLE, 2, tag::U64, tag::U64, tag::U64];
/// let tasks = parse_section(&section).unwrap();
/// assert_eq!(tasks[0].task, "add");
/// assert_eq!(tasks[0].output, TypeDesc::Int(Int::U64));
/// assert_eq!(tasks[0].input.to_string(), "(u64, u64)");
/// ```
pub fn parse_section(bytes: &[u8]) -> Result<Vec<TaskTypes>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut tasks: Vec<TaskTypes> = Vec::new();
    while reader.at < bytes.len() {
        let version = reader.byte()?;
        if version != SCHEMA_VERSION {
            return Err(reader.error(format!(
                "entry format {version:#04x} is not {SCHEMA_VERSION:#04x}"
            )));
        }
        let task = reader.string()?;
        let input = reader.ty(0)?;
        let output = reader.ty(0)?;
        if tasks.iter().any(|t| t.task == task) {
            return Err(format!("task `{task}` is described twice"));
        }
        tasks.push(TaskTypes {
            task,
            input,
            output,
        });
    }
    Ok(tasks)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, message: impl fmt::Display) -> String {
        format!("at byte {}: {message}", self.at)
    }

    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error("the section ends too early"))?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<usize, String> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // No count can exceed the bytes left: each item (or string
                // byte) takes at least one.
                let value = usize::try_from(value).unwrap_or(usize::MAX);
                if value > self.bytes.len().saturating_sub(self.at) {
                    return Err(
                        self.error(format!("a count of {value} is more than the section holds"))
                    );
                }
                return Ok(value);
            }
        }
        Err(self.error("a varint is too long"))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.varint()?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("a string runs past the section"))?;
        let text = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| self.error("a name is not UTF-8"))?
            .to_owned();
        self.at = end;
        Ok(text)
    }

    fn types(&mut self, depth: usize) -> Result<Vec<TypeDesc>, String> {
        let n = self.varint()?;
        (0..n).map(|_| self.ty(depth)).collect()
    }

    fn fields(&mut self, depth: usize) -> Result<Vec<(String, TypeDesc)>, String> {
        let n = self.varint()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.ty(depth)?)))
            .collect()
    }

    fn ty(&mut self, depth: usize) -> Result<TypeDesc, String> {
        if depth >= MAX_TYPE_DEPTH {
            return Err(self.error(format!("types nest deeper than {MAX_TYPE_DEPTH}")));
        }
        let inner = depth + 1;
        let int = |kind| Ok(TypeDesc::Int(kind));
        match self.byte()? {
            tag::BOOL => Ok(TypeDesc::Bool),
            tag::I8 => int(Int::I8),
            tag::I16 => int(Int::I16),
            tag::I32 => int(Int::I32),
            tag::I64 => int(Int::I64),
            tag::I128 => int(Int::I128),
            tag::U8 => int(Int::U8),
            tag::U16 => int(Int::U16),
            tag::U32 => int(Int::U32),
            tag::U64 => int(Int::U64),
            tag::U128 => int(Int::U128),
            tag::USIZE => int(Int::Usize),
            tag::ISIZE => int(Int::Isize),
            tag::F32 => Ok(TypeDesc::F32),
            tag::F64 => Ok(TypeDesc::F64),
            tag::CHAR => Ok(TypeDesc::Char),
            tag::STRING => Ok(TypeDesc::String),
            tag::BYTES => Ok(TypeDesc::Bytes),
            tag::UNIT => Ok(TypeDesc::Unit),
            tag::OPTION => Ok(TypeDesc::Option(Box::new(self.ty(inner)?))),
            tag::SEQ => Ok(TypeDesc::Seq(Box::new(self.ty(inner)?))),
            tag::MAP => Ok(TypeDesc::Map(
                Box::new(self.ty(inner)?),
                Box::new(self.ty(inner)?),
            )),
            tag::TUPLE => Ok(TypeDesc::Tuple(self.types(inner)?)),
            tag::UNIT_STRUCT => Ok(TypeDesc::UnitStruct(self.string()?)),
            tag::NEWTYPE_STRUCT => Ok(TypeDesc::NewtypeStruct(
                self.string()?,
                Box::new(self.ty(inner)?),
            )),
            tag::TUPLE_STRUCT => Ok(TypeDesc::TupleStruct(self.string()?, self.types(inner)?)),
            tag::STRUCT => Ok(TypeDesc::Struct(self.string()?, self.fields(inner)?)),
            tag::ENUM => {
                let name = self.string()?;
                let n = self.varint()?;
                let variants = (0..n)
                    .map(|_| {
                        let variant = self.string()?;
                        let body = match self.byte()? {
                            tag::VARIANT_UNIT => Variant::Unit,
                            tag::VARIANT_NEWTYPE => Variant::Newtype(self.ty(inner)?),
                            tag::VARIANT_TUPLE => Variant::Tuple(self.types(inner)?),
                            tag::VARIANT_STRUCT => Variant::Struct(self.fields(inner)?),
                            other => {
                                return Err(self.error(format!("unknown variant kind {other:#04x}")))
                            }
                        };
                        Ok((variant, body))
                    })
                    .collect::<Result<_, String>>()?;
                Ok(TypeDesc::Enum(name, variants))
            }
            tag::OPAQUE => Ok(TypeDesc::Opaque(self.string()?)),
            other => Err(self.error(format!("unknown type tag {other:#04x}"))),
        }
    }
}

/// Pseudo-Rust: `HeavyInput { uid: String, n: u64 }`, `Vec<u8>`, `(u64, u64)`.
impl fmt::Display for TypeDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[TypeDesc]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        fn fields(f: &mut fmt::Formatter<'_>, fields: &[(String, TypeDesc)]) -> fmt::Result {
            f.write_str("{ ")?;
            for (i, (name, ty)) in fields.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name}: {ty}")?;
            }
            f.write_str(" }")
        }
        match self {
            TypeDesc::Bool => f.write_str("bool"),
            TypeDesc::Int(int) => f.write_str(int.name()),
            TypeDesc::F32 => f.write_str("f32"),
            TypeDesc::F64 => f.write_str("f64"),
            TypeDesc::Char => f.write_str("char"),
            TypeDesc::String => f.write_str("String"),
            TypeDesc::Bytes => f.write_str("bytes"),
            TypeDesc::Unit => f.write_str("()"),
            TypeDesc::Option(inner) => write!(f, "Option<{inner}>"),
            TypeDesc::Seq(inner) => write!(f, "Vec<{inner}>"),
            TypeDesc::Map(key, value) => write!(f, "Map<{key}, {value}>"),
            TypeDesc::Tuple(items) => {
                f.write_str("(")?;
                list(f, items)?;
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            TypeDesc::UnitStruct(name) | TypeDesc::Opaque(name) => f.write_str(name),
            TypeDesc::NewtypeStruct(name, inner) => write!(f, "{name}({inner})"),
            TypeDesc::TupleStruct(name, items) => {
                write!(f, "{name}(")?;
                list(f, items)?;
                f.write_str(")")
            }
            TypeDesc::Struct(name, members) => {
                write!(f, "{name} ")?;
                fields(f, members)
            }
            TypeDesc::Enum(name, variants) => {
                write!(f, "enum {name} {{ ")?;
                for (i, (variant, body)) in variants.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(variant)?;
                    match body {
                        Variant::Unit => {}
                        Variant::Newtype(inner) => write!(f, "({inner})")?,
                        Variant::Tuple(items) => {
                            f.write_str("(")?;
                            list(f, items)?;
                            f.write_str(")")?;
                        }
                        Variant::Struct(members) => {
                            f.write_str(" ")?;
                            fields(f, members)?;
                        }
                    }
                }
                f.write_str(" }")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Vec<u8> {
        let mut out = vec![text.len() as u8];
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn a_struct_an_enum_and_nesting_parse_and_print() {
        let mut section = vec![SCHEMA_VERSION];
        section.extend(s("heavy"));
        section.push(tag::STRUCT);
        section.extend(s("In"));
        section.push(2);
        section.extend(s("uid"));
        section.push(tag::STRING);
        section.extend(s("n"));
        section.push(tag::U64);
        section.push(tag::ENUM);
        section.extend(s("Out"));
        section.push(2);
        section.extend(s("Done"));
        section.push(tag::VARIANT_UNIT);
        section.extend(s("Many"));
        section.push(tag::VARIANT_NEWTYPE);
        section.push(tag::SEQ);
        section.push(tag::OPTION);
        section.push(tag::U128);
        let tasks = parse_section(&section).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].input.to_string(), "In { uid: String, n: u64 }");
        assert_eq!(
            tasks[0].output.to_string(),
            "enum Out { Done, Many(Vec<Option<u128>>) }"
        );
    }

    #[test]
    fn damaged_sections_are_refused_not_panicked_on() {
        // Truncated at every length, and every byte flipped: errors or
        // descriptions, never a panic.
        let mut section = vec![SCHEMA_VERSION];
        section.extend(s("t"));
        section.extend([tag::TUPLE, 2, tag::U8, tag::STRING, tag::UNIT]);
        assert!(parse_section(&section).is_ok());
        for end in 0..section.len() {
            let _ = parse_section(&section[..end]);
        }
        for i in 0..section.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = section.clone();
                damaged[i] ^= flip;
                let _ = parse_section(&damaged);
            }
        }
        assert!(parse_section(&[0x02]).unwrap_err().contains("format"));
        // A huge count is refused before anything is allocated for it.
        let huge = [
            SCHEMA_VERSION,
            1,
            b't',
            tag::TUPLE,
            0xff,
            0xff,
            0xff,
            0xff,
            0x0f,
        ];
        assert!(parse_section(&huge)
            .unwrap_err()
            .contains("more than the section holds"));
        // Deep nesting is refused, not a stack overflow.
        let mut deep = vec![SCHEMA_VERSION, 1, b't'];
        deep.extend(std::iter::repeat_n(tag::OPTION, 10_000));
        assert!(parse_section(&deep).unwrap_err().contains("deeper"));
        // A task twice.
        let twice = [section.clone(), section].concat();
        assert!(parse_section(&twice).unwrap_err().contains("twice"));
    }
}
