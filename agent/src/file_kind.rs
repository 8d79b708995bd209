//! What kind of file a path is, in the words an error line uses (`a FIFO`, `a socket`, ...):
//! for the readers that refuse anything but a regular file (config files, the audit database).

use std::os::unix::fs::FileTypeExt;

/// `a FIFO`, `a socket`, `a character device`, `a block device`, `a directory`, `a symlink`
/// or `a regular file`, for `ft` (from `metadata`, which follows symlinks, or
/// `symlink_metadata`).
pub fn describe(ft: &std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "a symlink"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_a_fifo_a_folder_and_a_file() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let kind =
            |p: &std::path::Path| super::describe(&std::fs::metadata(p).unwrap().file_type());
        assert_eq!(kind(&fifo), "a FIFO");
        assert_eq!(kind(d.path()), "a directory");
        std::fs::write(d.path().join("r"), "").unwrap();
        assert_eq!(kind(&d.path().join("r")), "a regular file");
    }
}
