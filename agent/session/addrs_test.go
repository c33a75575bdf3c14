package session

import (
	"reflect"
	"testing"
)

func TestMergeAddrs(t *testing.T) {
	tests := []struct {
		name  string
		lists [][]string
		want  []string
	}{
		{"empty", nil, nil},
		{"flag order kept", [][]string{{"b:1", "a:1"}}, []string{"b:1", "a:1"}},
		{"tcp scheme and spaces dropped", [][]string{{" tcp://a:1 ", "a:1"}}, []string{"a:1"}},
		{"later lists add, never reorder", [][]string{{"a:1"}, {"c:1", "a:1"}, {"b:1"}}, []string{"a:1", "c:1", "b:1"}},
		{"blank entries skipped", [][]string{{"", "  ", "a:1"}}, []string{"a:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeAddrs(tt.lists...); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
