//! Reading gob's integers, strings and type definitions from a byte slice.

use super::*;

/// Reads a `wireType` defining type `id`: it must be a struct whose
/// fields are some of `Message`'s.
pub(super) fn definition(cursor: &mut Cursor<'_>, id: u64) -> Result<Layout, GobError> {
    let unsupported = |why: &str| GobError::UnsupportedType(why.to_string());
    // wireType: exactly one field set, StructT.
    if cursor.uint()? != WIRE_TYPE_STRUCT + 1 {
        return Err(unsupported("only a struct can be a Message"));
    }
    let mut layout = Layout {
        id,
        fields: [None; 4],
        count: 0,
    };
    let mut defined_id = None;
    let mut field: u64 = 0;
    // StructType: CommonType (field 0), Field []*fieldType (field 1).
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            break;
        }
        field = field
            .checked_add(delta)
            .ok_or_else(|| unsupported("field number overflow"))?;
        match field {
            1 => defined_id = common_type(cursor)?,
            2 => fields(cursor, &mut layout)?,
            _ => return Err(unsupported("unknown StructType field")),
        }
    }
    if cursor.uint()? != 0 {
        return Err(unsupported("more than one kind of type in one definition"));
    }
    if defined_id != Some(id) {
        return Err(unsupported("the struct's id does not match its definition"));
    }
    Ok(layout)
}

/// Reads a CommonType (Name string, Id int); returns the id, if given.
fn common_type(cursor: &mut Cursor<'_>) -> Result<Option<u64>, GobError> {
    let mut id = None;
    let mut field = 0u64;
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            return Ok(id);
        }
        field = field.saturating_add(delta);
        match field {
            1 => {
                let len = cursor.uint()?;
                cursor.bytes(usize::try_from(len).unwrap_or(usize::MAX), "type name")?;
            }
            2 => id = u64::try_from(cursor.int()?).ok(),
            _ => {
                return Err(GobError::UnsupportedType(
                    "unknown CommonType field".to_string(),
                ))
            }
        }
    }
}

/// Reads the struct's field list into `layout`.
fn fields(cursor: &mut Cursor<'_>, layout: &mut Layout) -> Result<(), GobError> {
    let count = cursor.uint()?;
    if count > layout.fields.len() as u64 {
        return Err(GobError::UnsupportedType(format!(
            "a struct of {count} fields (Message has 4)"
        )));
    }
    for slot in 0..count as usize {
        let (name, type_id) = field_type(cursor)?;
        let known = Field::named(name).ok_or_else(|| {
            GobError::UnsupportedType(format!(
                "field '{}' is not one of To, From, Content, Error",
                crate::sanitize::Escaped(name)
            ))
        })?;
        if type_id != known.type_id() {
            return Err(GobError::UnsupportedType(format!(
                "field '{}' has type id {type_id}",
                crate::sanitize::Escaped(name)
            )));
        }
        if layout.fields[..slot].contains(&Some(known)) {
            return Err(GobError::UnsupportedType(format!(
                "field '{}' appears twice",
                crate::sanitize::Escaped(name)
            )));
        }
        layout.fields[slot] = Some(known);
    }
    layout.count = count as usize;
    Ok(())
}

/// Reads a fieldType (Name string, Id int).
fn field_type<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a [u8], u64), GobError> {
    let mut name: &[u8] = b"";
    let mut id = 0;
    let mut field = 0u64;
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            return Ok((name, id));
        }
        field = field.saturating_add(delta);
        match field {
            1 => {
                let len = cursor.uint()?;
                name = cursor.bytes(usize::try_from(len).unwrap_or(usize::MAX), "field name")?;
            }
            2 => id = u64::try_from(cursor.int()?).unwrap_or(0),
            _ => {
                return Err(GobError::UnsupportedType(
                    "unknown fieldType field".to_string(),
                ))
            }
        }
    }
}

/// Reads gob's integers and byte strings from one message body.
pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    pub(super) fn uint(&mut self) -> Result<u64, GobError> {
        let &first = self
            .buf
            .get(self.at)
            .ok_or(GobError::Truncated("integer"))?;
        if first < 0x80 {
            self.at += 1;
            return Ok(u64::from(first));
        }
        // The negated byte count: 0xff is 1 byte, 0xf8 is 8.
        let count = usize::from(first.wrapping_neg());
        if count == 0 || count > 8 {
            return Err(GobError::BadInteger);
        }
        let bytes = self
            .buf
            .get(self.at + 1..self.at + 1 + count)
            .ok_or(GobError::Truncated("integer"))?;
        self.at += 1 + count;
        Ok(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    pub(super) fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        let magnitude = (u >> 1) as i64;
        Ok(if u & 1 == 1 { !magnitude } else { magnitude })
    }

    pub(super) fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], GobError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(GobError::Truncated(what))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    pub(super) fn finish(&self) -> Result<(), GobError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(GobError::Trailing(n)),
        }
    }
}
