package fsm

import (
	"errors"

	"github.com/heraldhq/herald/internal/wire"
)

// Commands, stored records and snapshots share the compact binary form of
// package wire.

type (
	encoder = wire.Encoder
	decoder = wire.Reader
)

// errTruncated is wrapped by decode errors caused by input that ends early.
var errTruncated = wire.ErrTruncated

// errChecksum is wrapped by decode errors of a stored record whose
// checksum does not match its bytes.
var errChecksum = errors.New("checksum mismatch")
