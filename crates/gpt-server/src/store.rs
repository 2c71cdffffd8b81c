//! Stored responses for `previous_response_id` and `GET/DELETE /v1/responses/{id}`: in
//! memory, bounded (the oldest is dropped first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use gpt_engine::harmony::ChatMessage;
use serde_json::Value;

/// A stored response: its object and the conversation it continues.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object as returned.
    pub object: Value,
    /// Every message up to and including this response's output.
    pub conversation: Vec<ChatMessage>,
}

/// The store.
#[derive(Debug)]
pub struct ResponseStore {
    cap: usize,
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl ResponseStore {
    /// At most `cap` responses.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Stores `s` under `id`, dropping the oldest beyond the bound.
    pub fn put(&self, id: String, s: Stored) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        if map.insert(id.clone(), s).is_none() {
            order.push_back(id);
        }
        while order.len() > self.cap {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// The response `id`.
    pub fn get(&self, id: &str) -> Option<Stored> {
        self.inner.lock().ok()?.0.get(id).cloned()
    }

    /// Removes `id`; whether it was there.
    pub fn delete(&self, id: &str) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let (map, order) = &mut *g;
        let had = map.remove(id).is_some();
        order.retain(|x| x != id);
        had
    }

    /// How many are stored.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }

    /// Whether none is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_first() {
        let s = ResponseStore::new(2);
        for i in 0..3 {
            s.put(
                format!("r{i}"),
                Stored {
                    object: Value::from(i),
                    conversation: vec![],
                },
            );
        }
        assert_eq!(s.len(), 2);
        assert!(s.get("r0").is_none());
        assert_eq!(s.get("r2").unwrap().object, Value::from(2));
        assert!(s.delete("r1"));
        assert!(!s.delete("r1"));
        assert_eq!(s.len(), 1);
    }
}
