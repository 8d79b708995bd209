//! JSON-RPC 1.0 transport for OVSDB (RFC 7047 §4) over a unix stream socket; schema-free (no
//! database, table or column names here).
//!
//! One [`Connection`] owns one socket and two tasks: a writer (serialised requests and echo
//! replies go through one channel, so messages never interleave) and a reader that
//! stream-parses the concatenated JSON values the server sends (RFC 7047 has no framing), routes
//! replies to their callers by `u64` id (many calls may be in flight: pipelining), answers
//! server `echo` requests (§4.1.11) and hands `update` notifications (§4.1.6) to the handler
//! registered for their monitor id. Works on a current-thread tokio runtime; `connect` must be
//! called inside one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::proto::OpError;
use super::OvsdbError;

/// What the reader task hands to a waiting caller.
enum Reply {
    /// The whole JSON-RPC response object.
    Message(Value),
    /// The connection closed before the response arrived; the reason.
    Closed(String),
}

/// Pending calls and the closed flag, under one lock so no call is registered after the
/// connection failed (it would wait forever).
struct State {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    closed: Option<String>,
}

/// Handler of the `<table-updates>` of one monitor (RFC 7047 §4.1.6), run on the reader task.
pub type UpdateHandler = Arc<dyn Fn(&Value) + Send + Sync>;

struct Inner {
    path: PathBuf,
    next_id: AtomicU64,
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// The close reason once the connection is gone, for [`Connection::closed`].
    closed: watch::Sender<Option<String>>,
    /// Monitor id (`json-value` of §4.1.5, a string here) → handler of its `update`s.
    monitors: Mutex<HashMap<String, UpdateHandler>>,
    echoes: AtomicU64,
}

/// A JSON-RPC 1.0 connection to an ovsdb-server (RFC 7047 §4) over a unix socket.
///
/// Methods take `&self` and may run concurrently (pipelined on the one connection). Every call
/// is bounded by the timeout given to [`Connection::connect`]; when the connection is lost
/// every pending and later call fails with [`OvsdbError::ConnectionClosed`]. Dropping it stops
/// its tasks and closes the socket.
pub struct Connection {
    inner: Arc<Inner>,
    timeout: Duration,
    tasks: [JoinHandle<()>; 2],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("path", &self.inner.path)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Drop guard removing a pending call's entry.
struct Unregister<'a>(&'a Inner, u64);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.lock().pending.remove(&self.1);
    }
}

/// A duration in whole ms, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (single inserts/removes).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn monitors(&self) -> MutexGuard<'_, HashMap<String, UpdateHandler>> {
        self.monitors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection closed and fails every pending call with `reason`.
    fn close(&self, reason: String) {
        let pending = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(reason.clone());
            }
            std::mem::take(&mut st.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Reply::Closed(reason.clone()));
        }
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn closed_error(&self, reason: String) -> OvsdbError {
        OvsdbError::ConnectionClosed {
            path: self.path.clone(),
            reason,
        }
    }

    /// Handles one JSON value from the server.
    fn dispatch(&self, msg: Value) {
        let method = msg.get("method").and_then(Value::as_str);
        let id = msg.get("id").filter(|v| !v.is_null());
        match (method, id) {
            (Some("echo"), Some(id)) => {
                let params = msg.get("params").cloned().unwrap_or_else(|| json!([]));
                let reply = json!({"id": id, "result": params, "error": null});
                if self.out.send(reply.to_string().into_bytes()).is_ok() {
                    self.echoes.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Some(m), Some(id)) => {
                log::debug!("OVSDB server request {m:?} not supported; answering with an error");
                let reply =
                    json!({"id": id, "result": null, "error": format!("unknown method {m}")});
                let _ = self.out.send(reply.to_string().into_bytes());
            }
            (Some("update"), None) => {
                let params = msg.get("params").and_then(Value::as_array);
                if let Some([mon, updates]) = params.map(Vec::as_slice) {
                    let handler = mon.as_str().and_then(|m| self.monitors().get(m).cloned());
                    if let Some(handler) = handler {
                        handler(updates);
                    }
                }
            }
            (Some(m), None) => log::debug!("OVSDB notification {m:?} ignored"),
            (None, _) => {
                let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                    log::debug!("OVSDB message without a known id ignored: {msg}");
                    return;
                };
                let tx = self.lock().pending.remove(&id);
                match tx {
                    Some(tx) => {
                        let _ = tx.send(Reply::Message(msg));
                    }
                    None => log::debug!("OVSDB reply to unknown or timed-out id {id} ignored"),
                }
            }
        }
    }
}

/// Incremental scan for the end of the last complete top-level JSON value in a buffer, so
/// each byte is looked at once and serde only parses complete messages (re-parsing a partial
/// multi-MB reply on every read would be quadratic). Tracks nesting and string/escape state.
#[derive(Default)]
struct Framer {
    scanned: usize,
    depth: usize,
    in_str: bool,
    esc: bool,
}

impl Framer {
    /// Scans `buf[self.scanned..]`; returns the length of the prefix made of complete values.
    /// The caller drains a prefix of `n` bytes and then subtracts `n` from `scanned`.
    fn complete_prefix(&mut self, buf: &[u8]) -> usize {
        let mut end = 0;
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if self.in_str {
                match (self.esc, b) {
                    (true, _) => self.esc = false,
                    (false, b'\\') => self.esc = true,
                    (false, b'"') => self.in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        end = i + 1;
                    }
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        end
    }
}

/// Splits the byte stream of an OVSDB connection into JSON values (RFC 7047 §4: concatenated
/// JSON texts, no framing). Feed it what `read(2)` returns, in chunks of any size; it keeps
/// the incomplete tail for the next chunk. Used by the connection's reader task, and by the
/// fuzz target for the reply parser.
#[derive(Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    framer: Framer,
}

impl StreamDecoder {
    /// Appends `chunk` and returns every JSON value completed by it, in order.
    ///
    /// # Errors
    /// `invalid JSON from server: <serde_json message>` when the stream holds bytes that are
    /// not JSON; the connection must then be closed (there is no way to resynchronise).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Value>, String> {
        self.buf.extend_from_slice(chunk);
        let complete = self.framer.complete_prefix(&self.buf);
        if complete == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.buf[..complete]).into_iter::<Value>();
        for item in stream.by_ref() {
            match item {
                Ok(v) => out.push(v),
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(format!("invalid JSON from server: {e}")),
            }
        }
        let used = stream.byte_offset();
        // `used` < `complete` only for trailing whitespace or a stray scalar; keep it for the
        // next round so nothing is lost.
        self.buf.drain(..used);
        self.framer.scanned = self.framer.scanned.saturating_sub(used);
        Ok(out)
    }

    /// Bytes held back waiting for the rest of a value.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

async fn reader_task(inner: Arc<Inner>, mut rd: OwnedReadHalf) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut dec = StreamDecoder::default();
    let reason = loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) => break "ovsdb-server closed the connection".to_string(),
            Ok(n) => n,
            Err(e) => break format!("read error: {e}"),
        };
        match dec.push(&chunk[..n]) {
            Ok(values) => {
                for v in values {
                    inner.dispatch(v);
                }
            }
            Err(e) => break e,
        }
    };
    inner.close(reason);
}

async fn writer_task(
    inner: Arc<Inner>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            inner.close(format!("write error: {e}"));
            return;
        }
    }
}

/// Checks the `result` of a `transact` whose ops were named `names` (their `op` members):
/// the per-op results when every op and the commit succeeded (RFC 7047 §4.1.3, §5.2).
///
/// Errors: [`OvsdbError::OpFailed`] for the first result with an `error` member that belongs
/// to an op, [`OvsdbError::CommitFailed`] for the extra element after the last op's result,
/// [`OvsdbError::BadReply`] when `result` is not an array or is shorter than `names`.
pub(crate) fn transact_results(names: &[String], result: Value) -> Result<Vec<Value>, OvsdbError> {
    let Value::Array(results) = result else {
        return Err(OvsdbError::BadReply {
            method: "transact".into(),
            detail: format!("result is not an array: {result}"),
        });
    };
    for (index, r) in results.iter().enumerate() {
        let Some(OpError { error, details }) = OpError::from_result(r) else {
            continue;
        };
        return Err(match names.get(index) {
            Some(op) => OvsdbError::OpFailed {
                index,
                op: op.clone(),
                error,
                details,
            },
            None => OvsdbError::CommitFailed { error, details },
        });
    }
    if results.len() < names.len() {
        return Err(OvsdbError::BadReply {
            method: "transact".into(),
            detail: format!("{} results for {} ops", results.len(), names.len()),
        });
    }
    Ok(results)
}

impl Connection {
    /// Connects to the ovsdb-server unix socket at `path` (e.g. `/run/openvswitch/db.sock`).
    ///
    /// `timeout` bounds the connect and, later, every single request (ms resolution).
    /// Must be called within a tokio runtime (current-thread is fine): it spawns the reader
    /// and writer tasks.
    ///
    /// `EAGAIN` (ovsdb-server's listen backlog is full) is retried with 1–20 ms backoff
    /// within `timeout`.
    ///
    /// Errors: [`OvsdbError::Connect`] (e.g. `ENOENT`, `ECONNREFUSED`),
    /// [`OvsdbError::ConnectTimeout`].
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Connection, OvsdbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || OvsdbError::ConnectTimeout {
            path: path.to_path_buf(),
            ms: ms(timeout),
        };
        let mut backoff = Duration::from_millis(1);
        let stream = loop {
            match tokio::time::timeout_at(deadline, UnixStream::connect(path)).await {
                Err(_) => return Err(timed_out()),
                // A full listen backlog (a start storm: hundreds of hooks connecting at once)
                // makes a non-blocking AF_UNIX connect(2) fail with EAGAIN instead of
                // waiting (unix(7)): retry with backoff until the timeout.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(timed_out());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
                Ok(Err(source)) => {
                    return Err(OvsdbError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                Ok(Ok(s)) => break s,
            }
        };
        Ok(Connection::over(path, stream, timeout))
    }

    /// Runs the protocol over an already connected `stream` (named `path` in errors); must be
    /// called within a tokio runtime.
    pub(crate) fn over(path: &Path, stream: UnixStream, timeout: Duration) -> Connection {
        let (rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
            }),
            out,
            closed: watch::Sender::new(None),
            monitors: Mutex::new(HashMap::new()),
            echoes: AtomicU64::new(0),
        });
        let reader = tokio::spawn(reader_task(inner.clone(), rd));
        let writer = tokio::spawn(writer_task(inner.clone(), wr, out_rx));
        Connection {
            inner,
            timeout,
            tasks: [reader, writer],
        }
    }

    /// The socket path this connection was made to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The per-request timeout given to [`Connection::connect`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many server `echo` requests (RFC 7047 §4.1.11, the server's inactivity probe) this
    /// connection has answered.
    pub fn echoes_answered(&self) -> u64 {
        self.inner.echoes.load(Ordering::Relaxed)
    }

    /// Resolves once the connection is gone, to the [`OvsdbError::ConnectionClosed`] that
    /// calls fail with.
    pub async fn closed(&self) -> OvsdbError {
        let mut rx = self.inner.closed.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "closed".to_string(),
        };
        self.inner.closed_error(reason)
    }

    /// Sends one JSON-RPC request and returns its `result` (RFC 7047 §4.1).
    ///
    /// `params` must be a JSON array (the server drops the connection otherwise).
    /// Errors: [`OvsdbError::Timeout`] after the connection's timeout,
    /// [`OvsdbError::ConnectionClosed`], [`OvsdbError::Rpc`] for a non-null `error` member.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.lock();
            if let Some(reason) = &st.closed {
                return Err(self.inner.closed_error(reason.clone()));
            }
            st.pending.insert(id, tx);
        }
        // Removes the entry however this future ends (timeout, error, or dropped by the caller).
        let _unregister = Unregister(&self.inner, id);
        let req = json!({"id": id, "method": method, "params": params});
        if self.inner.out.send(req.to_string().into_bytes()).is_err() {
            return Err(self.inner.closed_error("writer stopped".into()));
        }
        let msg = match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => {
                return Err(OvsdbError::Timeout {
                    path: self.inner.path.clone(),
                    method: method.to_string(),
                    ms: ms(self.timeout),
                });
            }
            Ok(Err(_)) => return Err(self.inner.closed_error("reader stopped".into())),
            Ok(Ok(Reply::Closed(reason))) => return Err(self.inner.closed_error(reason)),
            Ok(Ok(Reply::Message(m))) => m,
        };
        match msg.get("error") {
            Some(e) if !e.is_null() => Err(OvsdbError::Rpc {
                method: method.to_string(),
                error: e.clone(),
            }),
            _ => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Runs one `transact` (RFC 7047 §4.1.3) of `ops` (each an operation object, §5.2) on
    /// database `db`, and returns the per-op results (same length as `ops`).
    ///
    /// Errors: [`OvsdbError::OpFailed`] naming the index, op, `error` and `details` of the
    /// first failed op (the transaction was aborted); [`OvsdbError::CommitFailed`] for the
    /// extra commit-error element; [`OvsdbError::BadReply`] when the result is not an array;
    /// plus those of [`Connection::call`].
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let names: Vec<String> = ops
            .iter()
            .map(|o| {
                o.get("op")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(Value::String(db.to_string()));
        params.extend(ops);
        let result = self.call("transact", Value::Array(params)).await?;
        transact_results(&names, result)
    }

    /// Sends `monitor` (RFC 7047 §4.1.5) of `requests` (the `<monitor-requests>` object) on
    /// database `db` under monitor id `id`, and returns the initial `<table-updates>`. Every
    /// later `update` notification (§4.1.6) for `id` is passed to `on_update` on the reader
    /// task, in arrival order; the handler is registered before the request is sent and stays
    /// registered for the life of the connection, even when this call fails (the server may
    /// still have set the monitor up), so use a fresh `id` per attempt.
    ///
    /// Errors: those of [`Connection::call`].
    pub async fn monitor(
        &self,
        db: &str,
        id: &str,
        requests: Value,
        on_update: UpdateHandler,
    ) -> Result<Value, OvsdbError> {
        self.inner.monitors().insert(id.to_string(), on_update);
        self.call("monitor", json!([db, id, requests])).await
    }
}

#[cfg(test)]
#[path = "rpc_tests.rs"]
pub(crate) mod tests;
