package acme

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	RouteLegoLogs(nil)
	os.Exit(m.Run())
}
