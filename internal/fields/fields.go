// Package fields holds what every package's configuration does alike
// (docs/architecture.md, "Configuration and lifecycle"): a zero field
// takes its default, and Validate names each field it refuses.
package fields

import (
	"errors"
	"fmt"
	"reflect"
)

// Default sets *v to def when *v is zero.
func Default[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Fill sets every zero field of *c to its value in defaults. Nested
// structs are left alone: each has its own WithDefaults, which knows what
// its zero fields mean. A field whose zero means something else than "the
// default" must be saved before Fill and put back after it.
func Fill[T any](c *T, defaults T) {
	dst, def := reflect.ValueOf(c).Elem(), reflect.ValueOf(defaults)
	for i := range dst.NumField() {
		f := dst.Field(i)
		if !f.CanSet() || f.Kind() == reflect.Struct || !f.IsZero() {
			continue
		}
		f.Set(def.Field(i))
	}
}

// Problems collects the refused fields of one configuration, each named
// in its error.
type Problems struct{ errs []error }

// Addf adds a problem.
func (p *Problems) Addf(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

// Add adds err, the problems of a part of the configuration, unless nil.
func (p *Problems) Add(err error) {
	if err != nil {
		p.errs = append(p.errs, err)
	}
}

// Required adds "name is required" unless set.
func (p *Problems) Required(name string, set bool) {
	if !set {
		p.Addf("%s is required", name)
	}
}

// NotNegative adds "name v is negative" when v is.
func NotNegative[T ~int | ~int64 | ~float64](p *Problems, name string, v T) {
	if v < 0 {
		p.Addf("%s %v is negative", name, v)
	}
}

// Err returns every problem joined, after prefix and ": " unless prefix
// is empty, or nil when there is none.
func (p *Problems) Err(prefix string) error {
	err := errors.Join(p.errs...)
	if err == nil || prefix == "" {
		return err
	}
	return fmt.Errorf("%s: %w", prefix, err)
}
