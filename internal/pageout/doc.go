// Package pageout gives back to the kernel the pages of the executable that
// only start-up touched. A Go binary runs every linked package's init at
// start (here: every DNS provider's SDK, the etcd client's and gRPC's
// protobuf descriptors) and those code and read-only data pages stay
// resident, counted in RSS, though most are never touched again. They are
// clean file pages: MADV_PAGEOUT drops them, and a page used later comes
// back from the page cache on its first touch (a minor fault).
package pageout
