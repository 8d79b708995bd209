//! Unit tests of the transport: the stream framer and decoder, and a Connection over a socket pair.

use super::Framer;

/// Feeding a stream byte by byte, every complete value is framed exactly at its end,
/// whatever quotes, escapes and brackets its strings hold.
#[test]
fn framer_finds_value_ends_across_splits() {
    let msgs = [
        r#"{"id":1,"result":[{"rows":[{"name":"a\"}b"}]}],"error":null}"#,
        r#" {"id":null,"method":"update","params":["x",{"s":"\\","t":"]}[{\\\""}]}"#,
        "\n[\"echo\"]",
    ];
    let stream: String = msgs.concat();
    let mut ends = Vec::new();
    let mut acc = 0;
    for m in msgs {
        acc += m.len();
        ends.push(acc);
    }
    let mut f = Framer::default();
    let mut found = Vec::new();
    let bytes = stream.as_bytes();
    for n in 1..=bytes.len() {
        let end = f.complete_prefix(&bytes[..n]);
        if end != 0 {
            found.push(end);
        }
    }
    assert_eq!(found, ends);
    let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
    assert_eq!(it.by_ref().count(), 3);
}
