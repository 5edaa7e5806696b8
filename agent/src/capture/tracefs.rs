//! tracefs and bpffs: mounted when missing (many hosts do not mount them),
//! and the tracepoint `format` files that say where arguments sit.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("cannot mount {fstype} at {path}: {source} (kspan must run as root or with CAP_SYS_ADMIN)")]
    Mount { fstype: &'static str, path: String, source: std::io::Error },
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: String, source: std::io::Error },
    #[error("tracepoint {tracepoint}: no field {field} in its format file")]
    NoField { tracepoint: String, field: String },
    #[error(
        "tracepoint {tracepoint}: argument {index} at offset {offset}, expected {expected}; \
         this kernel lays out syscall records differently from what kspan supports"
    )]
    Layout { tracepoint: String, index: usize, offset: u32, expected: u32 },
}

const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds tracefs, mounting it at /sys/kernel/tracing when no copy is there.
pub fn ensure_tracefs() -> Result<PathBuf, TracefsError> {
    for candidate in TRACEFS_CANDIDATES {
        let path = Path::new(candidate);
        if path.join("events").is_dir() {
            return Ok(path.to_owned());
        }
    }
    let path = TRACEFS_CANDIDATES[0];
    mount("tracefs", path)?;
    Ok(PathBuf::from(path))
}

/// Mounts bpffs at /sys/fs/bpf when it is not already mounted there.
pub fn ensure_bpffs() -> Result<(), TracefsError> {
    let path = "/sys/fs/bpf";
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, fstype) = (f.next(), f.next(), f.next());
        mnt == Some(path) && fstype == Some("bpf")
    }) {
        return Ok(());
    }
    mount("bpf", path)
}

fn mount(fstype: &'static str, path: &str) -> Result<(), TracefsError> {
    let err = |source| TracefsError::Mount { fstype, path: path.to_owned(), source };
    fs::create_dir_all(path).map_err(err)?;
    let (Ok(src), Ok(target), Ok(ty)) = (CString::new(fstype), CString::new(path), CString::new(fstype)) else {
        return Err(err(std::io::Error::other("path contains NUL")));
    };
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One `field:` line of a tracepoint format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses `field:TYPE NAME; offset:N; size:N; signed:N;` lines.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("field:")?;
            let mut parts = line.split(';').map(str::trim);
            let decl = parts.next()?;
            let mut name = decl.rsplit(' ').next()?;
            if let Some(bracket) = name.find('[') {
                name = &name[..bracket];
            }
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            Some(Field { name: name.to_owned(), offset: offset?, size: size? })
        })
        .collect()
}

pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Vec<Field>, TracefsError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path)
        .map_err(|source| TracefsError::Format { path: path.display().to_string(), source })?;
    Ok(parse_format(&text))
}

pub fn field_offset(fields: &[Field], tracepoint: &str, field: &str) -> Result<u32, TracefsError> {
    fields
        .iter()
        .find(|f| f.name == field)
        .map(|f| f.offset)
        .ok_or_else(|| TracefsError::NoField { tracepoint: tracepoint.to_owned(), field: field.to_owned() })
}

/// The kernel programs read argument i at `args_offset + 8 * i`; check that
/// a `sys_enter_*` format agrees and return its first argument's offset.
pub fn syscall_args_offset(fields: &[Field], tracepoint: &str) -> Result<u32, TracefsError> {
    let nr = fields.iter().position(|f| f.name == "__syscall_nr").ok_or_else(|| TracefsError::NoField {
        tracepoint: tracepoint.to_owned(),
        field: "__syscall_nr".to_owned(),
    })?;
    let args = &fields[nr + 1..];
    let Some(first) = args.first() else {
        return Err(TracefsError::NoField { tracepoint: tracepoint.to_owned(), field: "arguments".to_owned() });
    };
    for (index, arg) in args.iter().enumerate() {
        let expected = first.offset + 8 * index as u32;
        if arg.offset != expected || arg.size != 8 {
            return Err(TracefsError::Layout { tracepoint: tracepoint.to_owned(), index, offset: arg.offset, expected });
        }
    }
    Ok(first.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_WRITE: &str = "name: sys_enter_write
ID: 742
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, buf: 0x%08lx, count: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->buf)), ((unsigned long)(REC->count))
";

    #[test]
    fn parses_syscall_format() {
        let fields = parse_format(SYS_ENTER_WRITE);
        assert_eq!(fields.len(), 8);
        assert_eq!(fields[5], Field { name: "fd".into(), offset: 16, size: 8 });
        assert_eq!(syscall_args_offset(&fields, "sys_enter_write").unwrap(), 16);
    }

    #[test]
    fn array_fields_and_missing_fields() {
        let fields = parse_format("\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;");
        assert_eq!(field_offset(&fields, "fork", "parent_comm").unwrap(), 8);
        assert_eq!(field_offset(&fields, "fork", "child_pid").unwrap(), 44);
        assert!(field_offset(&fields, "fork", "nope").is_err());
    }

    #[test]
    fn rejects_unexpected_layout() {
        let odd = SYS_ENTER_WRITE.replace("offset:24", "offset:28");
        let err = syscall_args_offset(&parse_format(&odd), "sys_enter_write").unwrap_err();
        assert!(matches!(err, TracefsError::Layout { index: 1, .. }), "{err}");
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(parse_format("field:\nfield:int x; offset:abc; size:4;\n\u{0}").is_empty());
    }
}
