//! The embedded default output: accepted items appended to a file as JSON
//! lines, with the Kafka headers as fields. For trying the relay out without
//! Kafka; a line is written (to the OS, not fsynced) before the SDK is answered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ProduceError, Record, StartError};
use crate::config::Topics;
use crate::health::WriteHealth;

/// An append-only JSON-lines file.
pub struct FileSink {
    /// The open file; one request's lines are written in one call under the lock.
    file: Mutex<File>,
    /// Where it is, to open it again after a rotation.
    path: std::path::PathBuf,
    /// The default topic names, written as each line's `topic`.
    topics: Topics,
    /// Whether writes are failing.
    health: WriteHealth,
}

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    key: &'a str,
    project_id: &'a str,
    event_id: &'a str,
    item_type: &'a str,
    received_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_rate: Option<&'a str>,
    /// A JSON payload, embedded as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    /// Any other payload, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

impl FileSink {
    /// Opens (creating) the file for appending.
    pub fn open(path: &Path) -> Result<FileSink, StartError> {
        let file = append_to(path).map_err(|source| StartError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(FileSink {
            file: Mutex::new(file),
            path: path.to_owned(),
            topics: Topics::default(),
            health: WriteHealth::default(),
        })
    }

    /// Opens the path again (creating it), for the next lines: after
    /// logrotate (or an operator) moved the file away, lines go to a new one
    /// rather than on into the moved one. On failure the old file stays.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = append_to(&self.path)?;
        let mut open = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("file sink lock poisoned"))?;
        *open = file;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Topic names written into each line.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Why writes are failing, if the last one failed lately (see
    /// [`WriteHealth::failing`]).
    pub fn failing(&self) -> Option<String> {
        self.health.failing()
    }

    /// Appends one line per record, all in one write.
    pub fn send(&self, records: &[Record]) -> Vec<Result<(), ProduceError>> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 256).sum());
        for r in records {
            let json: Option<&RawValue> = serde_json::from_slice(&r.payload).ok();
            let h = &r.headers;
            let line = Line {
                topic: &r.topic,
                key: &r.key,
                project_id: &h.project_id,
                event_id: &h.event_id,
                item_type: &h.item_type,
                received_at: &h.received_at,
                fingerprint: h.fingerprint.as_deref(),
                sample_rate: h.sample_rate.as_deref(),
                payload: json,
                payload_base64: json
                    .is_none()
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&r.payload)),
            };
            let start = buf.len();
            serde_json::to_writer(&mut buf, &line).expect("serializing into memory cannot fail");
            // One item, one line: a payload embedded as it came may be
            // pretty-printed. Outside strings a line end is whitespace, and
            // inside them JSON has it escaped, so a space takes its place.
            // (Only the embedded payload can hold one: the rest is written
            // by serde_json, which escapes it.)
            if json.is_some() && memchr::memchr2(b'\n', b'\r', &r.payload).is_some() {
                for b in &mut buf[start..] {
                    if *b == b'\n' || *b == b'\r' {
                        *b = b' ';
                    }
                }
            }
            buf.push(b'\n');
        }
        let written = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("file sink lock poisoned"))
            .and_then(|mut f| f.write_all(&buf));
        match written {
            Ok(()) => {
                self.health.ok();
                records.iter().map(|_| Ok(())).collect()
            }
            Err(e) => {
                self.health.failed(&e);
                let e = Arc::new(e);
                records
                    .iter()
                    .map(|_| Err(ProduceError::File(e.clone())))
                    .collect()
            }
        }
    }
}

fn append_to(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
