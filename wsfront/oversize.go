package wsfront

import (
	"encoding/json"
	"strings"

	"github.com/heraldhq/herald/protocol"
)

// A frame over MaxFrame (but within the 4 × MaxFrame that gws reads) is not
// decoded: decoding would allocate every value in it, which is what the
// limit is there to prevent. Its reply must still carry its id, or the
// client cannot tell which request failed and waits for it until its own
// deadline. scanOversized finds the id by walking the frame's top level
// only, skipping every value by its brackets and quotes without building
// it. The frame is already in memory (gws read it whole), so the scan costs
// one pass over at most 4 × MaxFrame bytes and allocates only the id it
// returns.

// maxScannedKey is the longest escaped key the scan decodes to compare it
// with "id" or "op": any longer key cannot unescape to two letters.
const maxScannedKey = 64

// scanOversized returns the id of a frame it cannot afford to decode, as
// decodeRequest would read it: the last top-level key equal to "id"
// ignoring case wins, as in encoding/json. op is the frame's op when it is
// one of the protocol's, for the reply's metrics. An id that is
// not a valid protocol id, or a frame malformed before its id, gives a nil
// id; a malformed frame after its id keeps it, since the reply only needs
// to name the request. Nested "id" keys (inside data or meta) are not the
// request's and are skipped.
func scanOversized(frame []byte) (id json.RawMessage, op string) {
	s := topScanner{b: frame}
	s.space()
	if !s.eat('{') {
		return nil, ""
	}
	for {
		s.space()
		if s.eat('}') || s.i >= len(s.b) || s.b[s.i] != '"' {
			break
		}
		kStart := s.i
		escaped, ok := s.skipString()
		if !ok {
			break
		}
		key := s.b[kStart:s.i]
		s.space()
		if !s.eat(':') {
			break
		}
		s.space()
		vStart := s.i
		if !s.skipValue() {
			break
		}
		val := s.b[vStart:s.i]
		switch {
		case keyIs(key, escaped, "id"):
			id = nil
			if validID(val) && json.Valid(val) {
				id = append(json.RawMessage(nil), val...)
			}
		case keyIs(key, escaped, "op"):
			op = knownOp(val)
		}
		s.space()
		if !s.eat(',') {
			break
		}
	}
	return id, op
}

// knownOp returns the op a quoted value names, if it is one of the
// protocol's written plainly; the op only labels the reply's metrics,
// where anything else is "unknown" anyway.
func knownOp(val []byte) string {
	if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
		return ""
	}
	for _, op := range [...]string{protocol.OpAuth, protocol.OpJoin, protocol.OpLeave, protocol.OpPublish, protocol.OpHistory, protocol.OpSubscribe, protocol.OpUnsubscribe, protocol.OpMembers, protocol.OpPing} {
		if string(val[1:len(val)-1]) == op {
			return op
		}
	}
	return ""
}

// keyIs reports whether the quoted key raw names field the way
// encoding/json matches keys to fields: after unescaping, ignoring case.
func keyIs(raw []byte, escaped bool, field string) bool {
	if !escaped {
		return len(raw) == len(field)+2 && strings.EqualFold(string(raw[1:len(raw)-1]), field)
	}
	if len(raw) > maxScannedKey {
		return false
	}
	var k string
	return json.Unmarshal(raw, &k) == nil && strings.EqualFold(k, field)
}

// topScanner walks JSON text without building values. It checks only what
// it needs to find where each value ends: anything malformed ends the scan
// rather than failing, and nothing it reads can make it index out of range.
type topScanner struct {
	b []byte
	i int
}

func (s *topScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *topScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// skipString moves past the string starting at s.i (at its quote) and
// reports whether it had escapes, and whether it was terminated.
func (s *topScanner) skipString() (escaped, ok bool) {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			s.i++
			return escaped, true
		case '\\':
			escaped = true
			s.i += 2 // the escaped byte cannot end the string
		default:
			s.i++
		}
	}
	return escaped, false
}

// skipValue moves past one value: a string by its quotes, an object or
// array by counting brackets outside strings (iteratively, so no nesting
// depth can exhaust the stack), a literal or number up to its delimiter.
func (s *topScanner) skipValue() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.skipString()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.skipString(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	case '}', ']', ',', ':':
		return false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return s.i > start
		}
		s.i++
	}
	return false
}
