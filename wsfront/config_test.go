package wsfront

import "testing"

// The read budgets: zero means the documented default, a page is cut to
// half the socket's queue, and a node budget below one page is refused.
func TestReadBudgetLimits(t *testing.T) {
	for _, tt := range []struct {
		name               string
		page, read, queue  int
		wantPage, wantRead int
		wantErr            bool
	}{
		{"defaults", 0, 0, 4 << 20, DefaultMaxPageBytes, DefaultMaxReadBytes, false},
		{"page cut to half the queue", 8 << 20, 0, 1 << 20, 512 << 10, DefaultMaxReadBytes, false},
		{"explicit", 256 << 10, 1 << 20, 4 << 20, 256 << 10, 1 << 20, false},
		{"node budget below a page", 1 << 20, 512 << 10, 4 << 20, 1 << 20, 512 << 10, true},
		{"negative page", -1, 0, 4 << 20, DefaultMaxPageBytes, DefaultMaxReadBytes, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			l.MaxPageBytes, l.MaxReadBytes, l.MaxQueueBytes = tt.page, tt.read, tt.queue
			if got := l.pageBytes(); got != tt.wantPage {
				t.Errorf("pageBytes() = %d, want %d", got, tt.wantPage)
			}
			if got := l.readBytes(); got != tt.wantRead {
				t.Errorf("readBytes() = %d, want %d", got, tt.wantRead)
			}
			if err := l.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}
