package dnscaa

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	r53types "github.com/aws/aws-sdk-go-v2/service/route53/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/libdns/libdns"
	"github.com/libdns/route53"
)

func buildRoute53(v map[string]string, cfg ProviderConfig, _ *Client) (Provider, error) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		if err := checkToken(k, v[k]); err != nil {
			return nil, err
		}
	}
	region := v["AWS_REGION"]
	if region == "" {
		// dstack-ingress's default; Route 53 is global, the region only
		// picks the endpoint the SDK signs for.
		region = "us-east-1"
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(
			v["AWS_ACCESS_KEY_ID"], v["AWS_SECRET_ACCESS_KEY"], v["AWS_SESSION_TOKEN"])),
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	// libdns/route53 loads the same configuration on first use and calls
	// log.Fatalf if that fails; loading it here first turns that into an
	// error at startup.
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCallTimeout)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	a := &route53Adapter{region: region, creds: awsCfg.Credentials}
	if arn := v["AWS_ROLE_ARN"]; arn != "" {
		if !strings.HasPrefix(arn, "arn:") {
			return nil, fmt.Errorf("AWS_ROLE_ARN=%q is not a role ARN (want arn:aws:iam::<account>:role/<name>)", arn)
		}
		// As dstack-ingress does through an AWS profile: the keys only
		// assume the role, and the role edits the zone. The cache renews
		// the temporary credentials before they expire.
		a.creds = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(awsCfg), arn,
			func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = "tee-ingress" }))
		awsCfg.Credentials = a.creds
	}
	a.api = r53.NewFromConfig(awsCfg)
	return a, nil
}

// route53Adapter feeds libdns/route53 v1.6.0 fresh credentials (it only takes
// static ones, and an assumed role's expire) and fixes its AppendRecords: for
// a single record it sends CREATE, which Route 53 rejects when the name
// already has a record set of that type, as when a second DNS-01 value joins
// the first at _acme-challenge or a CAA issue joins an iodef. Such appends
// are sent as one UPSERT of the existing values plus the new ones.
//
// Calls are serialised: the library initialises its client lazily without a
// lock.
type route53Adapter struct {
	mu       sync.Mutex
	region   string
	creds    aws.CredentialsProvider
	api      *r53.Client
	inner    *route53.Provider
	innerKey string
}

var _ Provider = (*route53Adapter)(nil)

func (a *route53Adapter) provider(ctx context.Context) (*route53.Provider, error) {
	cr, err := a.creds.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting AWS credentials: %w", err)
	}
	key := cr.AccessKeyID + "\x00" + cr.SessionToken
	if a.inner == nil || key != a.innerKey {
		a.inner = &route53.Provider{
			Region: a.region, AccessKeyId: cr.AccessKeyID, SecretAccessKey: cr.SecretAccessKey,
			SessionToken: cr.SessionToken, MaxRetries: 3,
		}
		a.innerKey = key
	}
	return a.inner, nil
}

func (a *route53Adapter) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.provider(ctx)
	if err != nil {
		return nil, err
	}
	return p.GetRecords(ctx, zone)
}

func (a *route53Adapter) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.provider(ctx)
	if err != nil {
		return nil, err
	}
	return p.DeleteRecords(ctx, zone, recs)
}

func (a *route53Adapter) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.provider(ctx)
	if err != nil {
		return nil, err
	}
	existing, err := p.GetRecords(ctx, zone)
	if err != nil {
		return nil, err
	}
	type key struct{ name, typ string }
	have := map[key][]libdns.Record{}
	for _, r := range existing {
		rr := r.RR()
		k := key{absoluteName(rr.Name, zone), rr.Type}
		have[k] = append(have[k], r)
	}
	var fresh []libdns.Record
	merge := map[key][]libdns.Record{}
	var order []key
	for _, r := range recs {
		rr := r.RR()
		k := key{absoluteName(rr.Name, zone), rr.Type}
		if len(have[k]) == 0 {
			fresh = append(fresh, r)
			continue
		}
		if merge[k] == nil {
			order = append(order, k)
		}
		merge[k] = append(merge[k], r)
	}
	var out []libdns.Record
	if len(fresh) > 0 {
		added, err := p.AppendRecords(ctx, zone, fresh)
		if err != nil {
			return nil, err
		}
		out = append(out, added...)
	}
	if len(order) == 0 {
		return out, nil
	}
	zoneID, err := a.zoneID(ctx, zone)
	if err != nil {
		return out, err
	}
	for _, k := range order {
		err := a.upsert(ctx, zoneID, k.name, k.typ, append(slices.Clone(have[k]), merge[k]...), merge[k][0].RR().TTL)
		if err != nil {
			return out, fmt.Errorf("adding to the %s record set at %s: %w", k.typ, k.name, err)
		}
		out = append(out, merge[k]...)
	}
	return out, nil
}

// upsert replaces the record set of name and type with recs' values (each
// once) at ttl.
func (a *route53Adapter) upsert(ctx context.Context, zoneID, name, typ string, recs []libdns.Record, ttl time.Duration) error {
	values := map[string]bool{}
	var rrs []r53types.ResourceRecord
	for _, r := range recs {
		v := r53Value(r.RR())
		if !values[v] {
			values[v] = true
			rrs = append(rrs, r53types.ResourceRecord{Value: aws.String(v)})
		}
	}
	_, err := a.api.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(zoneID),
		ChangeBatch: &r53types.ChangeBatch{Changes: []r53types.Change{{
			Action: r53types.ChangeActionUpsert,
			ResourceRecordSet: &r53types.ResourceRecordSet{
				Name: aws.String(name), Type: r53types.RRType(typ), TTL: aws.Int64(int64(ttl.Seconds())), ResourceRecords: rrs,
			},
		}}},
	})
	return err
}

func (a *route53Adapter) zoneID(ctx context.Context, zone string) (string, error) {
	res, err := a.api.ListHostedZonesByName(ctx, &r53.ListHostedZonesByNameInput{DNSName: aws.String(fqdn(zone)), MaxItems: aws.Int32(10)})
	if err != nil {
		return "", fmt.Errorf("finding hosted zone %s: %w", unfqdn(zone), err)
	}
	var private string
	for _, z := range res.HostedZones {
		if z.Name == nil || z.Id == nil || fqdn(*z.Name) != fqdn(zone) {
			continue
		}
		if z.Config == nil || !z.Config.PrivateZone {
			return *z.Id, nil
		}
		private = *z.Id
	}
	if private != "" {
		return private, nil
	}
	return "", fmt.Errorf("no hosted zone named %s", unfqdn(zone))
}

// r53Value is a record's value in Route 53's presentation format: TXT quoted
// with \" \\ and octal escapes for bytes outside printable ASCII, in strings
// of at most 255 bytes.
func r53Value(rr libdns.RR) string {
	if rr.Type != TypeTXT && rr.Type != "SPF" {
		return rr.Data
	}
	var parts []string
	data := rr.Data
	for len(data) > 0 || len(parts) == 0 {
		n := min(len(data), 255)
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < n; i++ {
			c := data[i]
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20 || c >= 0x7f:
				fmt.Fprintf(&b, "\\%03o", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
		parts = append(parts, b.String())
		data = data[n:]
	}
	return strings.Join(parts, " ")
}
