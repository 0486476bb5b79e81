package serverapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// MinKeyBytes is the shortest API key a node accepts.
const MinKeyBytes = 16

// ParseKeys splits a list of API keys: separated by commas or newlines,
// blank entries and lines starting with # ignored. Several keys let an
// operator rotate them: add the new one, move the backends, drop the old.
func ParseKeys(s string) []string {
	var keys []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for k := range strings.SplitSeq(line, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// keySet holds API keys as hashes, so that checking one takes the same
// time whatever its length or content.
type keySet [][sha256.Size]byte

func newKeySet(keys []string) (keySet, error) {
	ks := make(keySet, 0, len(keys))
	for i, k := range keys {
		if len(k) < MinKeyBytes {
			return nil, fmt.Errorf("API key %d of %d is %d bytes; use at least %d (e.g. openssl rand -hex 32)", i+1, len(keys), len(k), MinKeyBytes)
		}
		ks = append(ks, sha256.Sum256([]byte(k)))
	}
	return ks, nil
}

// holds reports whether key is one of the set; it compares with every key,
// so the time does not tell which one matched.
func (ks keySet) holds(key string) bool {
	h := sha256.Sum256([]byte(key))
	found := 0
	for i := range ks {
		found |= subtle.ConstantTimeCompare(h[:], ks[i][:])
	}
	return found == 1
}
