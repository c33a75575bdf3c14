package dispatcher

import (
	"testing"
	"time"
)

// The waits stay in their jittered bounds: quick after a delivered
// session, doubling to Max while a reachable manager keeps failing, never
// above MaxUnreached (×1.5 jitter) while nothing listens, and the first
// failure of a manager that is back starts from Min.
func TestBackoff(t *testing.T) {
	type step struct {
		delivered, reached bool
		base               time.Duration // the wait is in [base/2, 3*base/2)
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		b     Backoff
		steps []step
	}{
		{"reachable manager failing", Backoff{}, []step{
			{false, true, 100 * ms}, {false, true, 200 * ms}, {false, true, 400 * ms}, {false, true, 800 * ms},
			{false, true, 1600 * ms}, {false, true, 3200 * ms}, {false, true, 6400 * ms}, {false, true, 10 * time.Second}, {false, true, 10 * time.Second},
		}},
		{"manager down, then back and failing", Backoff{}, []step{
			{false, false, 100 * ms}, {false, false, 200 * ms}, {false, false, 400 * ms}, {false, false, 800 * ms},
			{false, false, time.Second}, {false, false, time.Second}, {false, false, time.Second},
			// Back, and failing: its own growth, from Min.
			{false, true, 100 * ms}, {false, true, 200 * ms},
		}},
		{"delivered resets", Backoff{}, []step{
			{false, true, 100 * ms}, {false, true, 200 * ms}, {false, false, 100 * ms}, {true, true, 100 * ms},
			{false, false, 100 * ms}, {false, true, 200 * ms},
		}},
		{"configured", Backoff{Min: 10 * ms, Max: 50 * ms, MaxUnreached: 20 * ms}, []step{
			{false, false, 10 * ms}, {false, false, 20 * ms}, {false, false, 20 * ms},
			{false, true, 10 * ms}, {false, true, 20 * ms}, {false, true, 40 * ms}, {false, true, 50 * ms},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			for i, s := range tc.steps {
				w := b.Next(s.delivered, s.reached)
				if w < s.base/2 || w >= s.base*3/2 {
					t.Fatalf("step %d: wait %v, want in [%v, %v)", i, w, s.base/2, s.base*3/2)
				}
			}
		})
	}
}
