//! Stop strings over streamed text: text is released as soon as no stop string can begin in
//! it, and generation ends at the first stop string (which is not part of the text).

/// Streamed text checked against stop strings (empty ones are ignored).
#[derive(Debug)]
pub struct StopText {
    stops: Vec<String>,
    /// Text not yet released.
    held: String,
    stopped: bool,
}

impl StopText {
    /// A checker for `stops` (none: every piece is released at once).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string was reached.
    pub fn hit(&self) -> bool {
        self.stopped
    }

    /// Adds `piece`; returns the text released and whether a stop string was reached.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.held.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// End of generation: what is still held (plus `rest`), unless a stop string was reached.
    pub fn finish(&mut self, rest: &str) -> String {
        if self.stopped {
            return String::new();
        }
        let (mut out, hit) = self.push(rest);
        if !hit {
            out.push_str(&std::mem::take(&mut self.held));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of every size and checks the released text against `want`.
    fn check(stops: &[&str], text: &str, want: &str, want_hit: bool) {
        let chars: Vec<char> = text.chars().collect();
        for size in 1..=chars.len().max(1) {
            let mut st = StopText::new(stops.iter().map(|s| s.to_string()).collect());
            let mut out = String::new();
            let mut hit = false;
            for piece in chars.chunks(size) {
                let piece: String = piece.iter().collect();
                let (o, h) = st.push(&piece);
                out.push_str(&o);
                hit |= h;
                if h {
                    break;
                }
            }
            out.push_str(&st.finish(""));
            assert_eq!((out.as_str(), hit), (want, want_hit), "pieces of {size}");
        }
    }

    #[test]
    fn stops_before_the_first_stop_string_in_any_split() {
        check(&["END", "ENDING"], "the ENDING", "the ", true);
        check(&["\n\n"], "a\nb\n\nc", "a\nb", true);
        check(&["xyz"], "abc xy", "abc xy", false);
        check(&["é!"], "café!x", "caf", true);
        check(&[], "plain", "plain", false);
    }
}
