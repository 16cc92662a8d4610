# Lists the functions that a preprocessed header declares, one per line: "name<TAB>declaration;".
# Input: `cc -E` output (with line markers). Only text from files whose path matches the awk
# variable `from` (a regex) is read; brace blocks (struct bodies, inline function bodies,
# namespaces) are dropped, and declarations of inline functions and templates are skipped, since
# they are not exported. Usage: cc -E hdr.h | awk -v from='nccl' -f decls.awk
BEGIN { keep = 0; text = "" }
/^# [0-9]+ "/ {
    file = $3
    gsub(/"/, "", file)
    keep = (file ~ from)
    next
}
/^#/ { next }
keep { text = text " " $0 }
END {
    gsub(/extern "C" *\{/, " ", text)
    gsub(/extern "C"/, " ", text)
    flat = ""
    depth = 0
    n = length(text)
    for (i = 1; i <= n; i++) {
        c = substr(text, i, 1)
        if (c == "{") {
            depth++
        } else if (c == "}") {
            if (depth > 0)
                depth--
            if (depth == 0)
                flat = flat ";"
        } else if (depth == 0) {
            flat = flat c
        }
    }
    count = split(flat, stmts, ";")
    for (k = 1; k <= count; k++) {
        s = stmts[k]
        while (match(s, /__attribute__ *\(\([^()]*(\([^()]*\)[^()]*)*\)\)/))
            s = substr(s, 1, RSTART - 1) " " substr(s, RSTART + RLENGTH)
        gsub(/[ \t]+/, " ", s)
        sub(/^ /, "", s)
        sub(/ $/, "", s)
        if (s ~ /^(typedef|template|static|struct|enum|using|namespace)/ || s ~ /inline/)
            continue
        if (!match(s, /[A-Za-z_][A-Za-z_0-9]* *\(/))
            continue
        name = substr(s, RSTART, RLENGTH)
        sub(/ *\($/, "", name)
        if (name ~ /^(p?nccl|anyccl)[A-Z]/)
            print name "\t" s ";"
    }
}
