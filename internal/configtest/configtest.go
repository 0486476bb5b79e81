// Package configtest checks that a package's configuration has Herald's one
// shape (docs/architecture.md, "Configuration and lifecycle"): a zero field
// takes its default, field by field, and Validate names the field it
// refuses.
package configtest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// Shape describes one configuration type C.
type Shape[C any] struct {
	// Defaults is DefaultConfig(): what WithDefaults gives a zero C.
	Defaults C
	// WithDefaults is C's WithDefaults.
	WithDefaults func(C) C
	// Base holds the required fields that have no default (a node id, a
	// directory); each field is set on top of it. Its fields must be ones
	// Defaults leaves zero.
	Base C
	// Validate, when set, is C's Validate: a config with one field set on
	// top of Base may only be refused for that field.
	Validate func(C) error
	// Skip names the fields that are neither set alone nor compared: those
	// whose default derives from other fields, and those whose zero keeps
	// a meaning of its own once other fields are set (each documented at
	// the field).
	Skip []string
}

// Invalid is one refused field: Set makes it invalid, and Validate's
// error must name Field.
type Invalid[C any] struct {
	Field string
	Set   func(*C)
}

// Check runs the shape's checks: a zero config (plus Base) gets every
// default; each settable field set alone keeps its value while every other
// field keeps its default; and each of invalid is refused naming its
// field.
func Check[C any](t *testing.T, s Shape[C], invalid ...Invalid[C]) {
	t.Helper()
	skip := map[int]bool{}
	typ := reflect.TypeFor[C]()
	for i := range typ.NumField() {
		skip[i] = skipped(s.Skip, typ.Field(i).Name)
	}
	def := s.WithDefaults(s.Defaults)
	if !same(def, s.Defaults, skip) {
		t.Errorf("WithDefaults changes DefaultConfig: %+v, want %+v", def, s.Defaults)
	}
	zero := s.WithDefaults(s.Base)
	want := merge(s.Defaults, s.Base)
	if !same(zero, want, skip) {
		t.Errorf("zero config: got %+v, want the defaults %+v", zero, want)
	}
	if s.Validate != nil {
		if err := s.Validate(s.Base); err != nil {
			t.Errorf("zero config (required fields set) refused: %v", err)
		}
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() || skip[i] {
			continue
		}
		c := s.Base
		v := reflect.ValueOf(&c).Elem().Field(i)
		if !v.IsZero() {
			continue // a required field of Base
		}
		other, ok := otherValue(reflect.ValueOf(s.Defaults).Field(i))
		if !ok {
			continue
		}
		v.Set(other)
		got := s.WithDefaults(c)
		if g := reflect.ValueOf(got).Field(i); !reflect.DeepEqual(g.Interface(), other.Interface()) {
			t.Errorf("%s set to %v: WithDefaults made it %v", f.Name, other, g)
		}
		if wantOne := merge(want, c); !same(got, wantOne, with(skip, i)) {
			t.Errorf("%s set alone changed other fields: got %+v, want %+v", f.Name, got, wantOne)
		}
		if s.Validate != nil {
			if err := s.Validate(c); err != nil && !strings.Contains(err.Error(), f.Name) {
				t.Errorf("%s set alone: refused for another field: %v", f.Name, err)
			}
		}
	}
	if s.Validate == nil && len(invalid) > 0 {
		t.Fatal("invalid cases without a Validate")
	}
	for _, bad := range invalid {
		c := s.Base
		bad.Set(&c)
		err := s.Validate(c)
		if err == nil {
			t.Errorf("invalid %s accepted", bad.Field)
		} else if !strings.Contains(err.Error(), bad.Field) {
			t.Errorf("invalid %s: the error does not name it: %v", bad.Field, err)
		}
	}
}

func skipped(skip []string, name string) bool {
	for _, s := range skip {
		if s == name {
			return true
		}
	}
	return false
}

// otherValue is a value of the field's kind that differs from its
// default def (and from zero), or false for kinds that are not set alone
// (structs, slices, maps, pointers, funcs, interfaces, bools whose default
// is true).
func otherValue(def reflect.Value) (reflect.Value, bool) {
	v := reflect.New(def.Type()).Elem()
	switch def.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n := def.Int()
		if def.Type() == reflect.TypeFor[time.Duration]() && n == 0 {
			n = int64(time.Second)
		}
		v.SetInt(max(2*n, 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(max(2*def.Uint(), 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(max(2*def.Float(), 1))
	case reflect.String:
		v.SetString(def.String() + "x")
	case reflect.Bool:
		if def.Bool() {
			return v, false
		}
		v.SetBool(true)
	default:
		return v, false
	}
	return v, true
}

// merge returns base with every non-zero field of over copied onto it.
func merge[C any](base, over C) C {
	b := reflect.ValueOf(&base).Elem()
	o := reflect.ValueOf(over)
	for i := range o.NumField() {
		if b.Type().Field(i).IsExported() && !o.Field(i).IsZero() {
			b.Field(i).Set(o.Field(i))
		}
	}
	return base
}

// with returns skip with field i added.
func with(skip map[int]bool, i int) map[int]bool {
	m := map[int]bool{i: true}
	for k, v := range skip {
		m[k] = m[k] || v
	}
	return m
}

// same compares two configs field by field, except the fields in skip:
// funcs by whether they are set (funcs are never equal), the rest deeply.
func same[C any](a, b C, skip map[int]bool) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if skip[i] || !va.Type().Field(i).IsExported() {
			continue
		}
		fa, fb := va.Field(i), vb.Field(i)
		if fa.Kind() == reflect.Func {
			if fa.IsNil() != fb.IsNil() {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			return false
		}
	}
	return true
}
