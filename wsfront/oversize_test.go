package wsfront

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScanOversized(t *testing.T) {
	big := strings.Repeat("x", 5000)
	nested := strings.Repeat(`{"id":99,"a":[`, 2000) + strings.Repeat(`]}`, 2000)
	tests := []struct {
		name, frame string
		wantID      string // "" for none
		wantOp      string
	}{
		{"id first", `{"id":7,"op":"publish","room":"r","data":"` + big + `"}`, "7", "publish"},
		{"id after large data", `{"op":"publish","data":{"text":"` + big + `","list":[1,{"k":"]}"}]},"room":"r","id":8}`, "8", "publish"},
		{"string id", `{"data":"` + big + `","id":"c-1"}`, `"c-1"`, ""},
		{"escaped quotes in data", `{"data":"a\"b\\\"},\"id\":1","id":9}`, "9", ""},
		{"nested id is not the request's", `{"data":{"id":5,"x":[{"id":6}]}}`, "", ""},
		{"deep nesting skipped", `{"data":` + nested + `,"id":10,"op":"join"}`, "10", "join"},
		{"id key in other case", `{"ID":11}`, "11", ""},
		{"escaped id key", `{"\u0069d":12,"\u006fp":"ping"}`, "12", "ping"},
		{"last id wins", `{"id":1,"data":"` + big + `","id":13}`, "13", ""},
		{"invalid id after valid", `{"id":1,"id":{"a":1}}`, "", ""},
		{"object id", `{"id":[1],"op":"publish"}`, "", "publish"},
		{"null id", `{"id":null}`, "", ""},
		{"long id", `{"id":"` + strings.Repeat("i", 300) + `"}`, "", ""},
		{"bad number id", `{"id":12abc,"op":"ping"}`, "", "ping"},
		{"unknown op", `{"id":16,"op":"dance"}`, "16", ""},
		{"truncated after id", `{"id":14,"data":"` + big, "14", ""},
		{"truncated before id", `{"data":"` + big, "", ""},
		{"not an object", `[{"id":1}]`, "", ""},
		{"empty", ``, "", ""},
		{"garbage key", `{id:1}`, "", ""},
		{"whitespace", " \n{ \"id\" : 15 , \"data\" : [ ] }", "15", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, op := scanOversized([]byte(tt.frame))
			if string(id) != tt.wantID || op != tt.wantOp {
				t.Fatalf("got id %q op %q, want id %q op %q", id, op, tt.wantID, tt.wantOp)
			}
		})
	}
}

// The scan must never allocate for what it skips: a frame of many
// megabytes of nested data costs the id's copy only.
func TestScanOversizedAllocatesOnlyTheID(t *testing.T) {
	frame := []byte(`{"op":"publish","data":{"text":"` + strings.Repeat("y", 1<<20) + `","more":[` +
		strings.Repeat(`{"a":"b"},`, 10000) + `1]},"id":123456}`)
	allocs := testing.AllocsPerRun(10, func() {
		if id, _ := scanOversized(frame); string(id) != "123456" {
			t.Fatalf("id %q", id)
		}
	})
	if allocs > 2 {
		t.Fatalf("%v allocations per scan", allocs)
	}
}

// FuzzScanOversized checks the scan against encoding/json on every frame
// the decoder accepts (the id it reads must be the one decodeRequest would
// echo), and that it never panics or yields an id that is not JSON on any
// other.
func FuzzScanOversized(f *testing.F) {
	for _, seed := range []string{
		`{"id":1,"op":"publish","room":"r","data":{"a":1}}`, `{"data":"x","id":"s"}`, `{"Id":2,"iD":3}`,
		`{"\u0049D":4}`, `{"id":{"id":5}}`, `{"id":-0.5e3,"op":"join"}`, `{"id":"\"\\"}`, `{"a":"\\","id":6}`,
		`{`, `{"id"`, `{"id":`, `{"id":7`, `[`, `"`, `{"a":[}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		id, _ := scanOversized(frame)
		if len(id) > 0 && (!json.Valid(id) || !validID(id)) {
			t.Fatalf("scan of %q gave id %q", frame, id)
		}
		var want struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(frame, &want) != nil {
			return
		}
		if !validID(want.ID) {
			want.ID = nil
		}
		if string(id) != string(want.ID) {
			t.Fatalf("scan of %q gave id %q; encoding/json reads %q", frame, id, want.ID)
		}
	})
}
