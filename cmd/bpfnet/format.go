package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"text/template"
)

// Output follows the docker CLI's --format convention, for every command
// that prints something a script may read:
//
//   - "" prints the command's default view (a table, or text);
//   - "json" prints JSON: one object per line for lists, the whole value
//     (an array for inspect) otherwise;
//   - "table" prints the default table, "table TEMPLATE" a table of the
//     template's fields under a header row;
//   - anything else is a Go template (text/template) run for each item,
//     with the functions docker's templates have: json, join, split,
//     lower, upper, title, truncate, pad.

// formatFlagUsage is the --format flag's help for commands that list.
const formatFlagUsage = `format the output: "json", "table", "table TEMPLATE" or a Go TEMPLATE (see docs/bpfnet.md)`

var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
	"pad": func(s string, before, after int) string {
		return strings.Repeat(" ", before) + s + strings.Repeat(" ", after)
	},
}

// checkFormat rejects a --format that is no valid template before the
// command asks the daemon anything.
func checkFormat(format string) error {
	switch format {
	case "", "json", "table":
		return nil
	}
	_, err := parseTemplate(strings.TrimPrefix(format, "table "))
	return err
}

func parseTemplate(text string) (*template.Template, error) {
	t, err := template.New("format").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("invalid --format template: %w", err)
	}
	return t, nil
}

// writeRows prints rows (structs of string fields, each with a `header`
// tag, as the table's columns name them) in format; defaultTable is the
// template of the default view, without its "table " prefix.
func writeRows[R any](w io.Writer, format, defaultTable string, rows []R) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case "", "table":
		format = "table " + defaultTable
	}
	text, table := strings.CutPrefix(format, "table ")
	text = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(text)
	t, err := parseTemplate(text)
	if err != nil {
		return err
	}
	out := w
	var tw *tabwriter.Writer
	if table {
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		out = tw
		if err := t.Execute(out, headerOf[R]()); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(out)
	}
	for _, r := range rows {
		if err := t.Execute(out, r); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(out)
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// fieldsOf lists a row type's template fields: its exported string
// fields, those of embedded structs included.
func fieldsOf[R any]() string {
	var names []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[R]()) {
		if f.IsExported() && f.Type.Kind() == reflect.String {
			names = append(names, "{{."+f.Name+"}}")
		}
	}
	return strings.Join(names, " ")
}

// headerOf is a row whose string fields are their column names (methods
// such as Label give "" there).
func headerOf[R any]() R {
	var r R
	v := reflect.ValueOf(&r).Elem()
	for _, f := range reflect.VisibleFields(v.Type()) {
		if f.IsExported() && f.Type.Kind() == reflect.String {
			h := f.Tag.Get("header")
			if h == "" {
				h = strings.ToUpper(f.Name)
			}
			v.FieldByIndex(f.Index).SetString(h)
		}
	}
	return r
}

// writeValue prints one value (or, for inspect, several) in format:
// "" is text(), "json" (and "" without text) the JSON, anything else a
// template run for each item.
func writeValue[T any](w io.Writer, format string, items []T, asArray bool, text func() error) error {
	switch {
	case format == "" && text != nil:
		return text()
	case format == "" || format == "json":
		if asArray {
			return printJSON(w, items)
		}
		return printJSON(w, items[0])
	}
	t, err := parseTemplate(format)
	if err != nil {
		return err
	}
	for _, it := range items {
		if err := t.Execute(w, it); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}
