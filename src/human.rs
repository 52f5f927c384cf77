//! Values as people read them in every report and error: byte sizes (`80 GiB`, `1.5 GiB`,
//! `512 B`), what kind of value a YAML/JSON value is (`a list`, `text`). Shared by every layer;
//! it imports nothing of theirs.

/// `80 GiB`, `1.5 GiB`, `512 B`: binary units, one decimal (truncated) when not whole.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        let size = 1u64 << shift;
        if n >= size {
            let whole = n / size;
            let tenths = (n % size) * 10 / size;
            return if tenths == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenths} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// What kind of value `v` is, for "must be X, not Y" messages.
pub fn kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "an empty value",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(80 << 30), "80 GiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(bytes(u64::MAX), "16777215.9 TiB");
    }
}
