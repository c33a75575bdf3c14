package identity

import (
	"regexp"
	"testing"
)

func TestNewID(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9a-v]{25}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !shape.MatchString(id) {
			t.Fatalf("ID %q: want 25 characters of [0-9a-v]", id)
		}
		if seen[id] {
			t.Fatalf("ID %q returned twice", id)
		}
		seen[id] = true
	}
}
