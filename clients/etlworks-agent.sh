#!/usr/bin/env bash
# etlworks-agent.sh: talk to an etlworks-agent server (the Etlworks AI Agent API) from a shell.
#
# Self-contained: needs bash 4.2+ and curl; uses jq, when it is installed, for readable output and to
# check JSON arguments, and works without it. Run with --help for the commands.
#
#   export ETLWORKS_URL=http://127.0.0.1:8080        # the server's root, without /rest
#   export ETLWORKS_API_KEY=...                      # e.g. $(cat data/admin.key)
#   ./etlworks-agent.sh chat-stream "list connections"
#
# Exit codes: 0 ok; 1 the server refused or failed the request, or could not be reached;
# 2 usage error (bad arguments, invalid JSON, ETLWORKS_URL or ETLWORKS_API_KEY not set).

set -u

VERSION=0.1.0
API_PATH=/rest/v1/ai-agent/api
PROG=${0##*/}
STATUS_MARK=__etlworks_agent_sh_status__
TOOL_EXAMPLE="tool search_knowledge_base '{\"query\": \"merge keys\", \"limit\": 3}'"

usage() {
  cat <<EOF
usage: $PROG [--json] COMMAND [ARGS...]

Talk to an etlworks-agent server (the Etlworks AI Agent API): tools, chat, streaming and sessions.

commands:
  tools                          list the tools
  tool NAME [JSON]               run one tool with its arguments as a JSON object (default {})
  chat MESSAGE                   send one message to the agent and print its answer
  chat-stream MESSAGE            the same, printing the answer as it is written and the tool
                                 calls as one-line notes on standard error
  session-create [--title T] [--system-prompt P]
                                 start a session and print its id
  session-chat ID MESSAGE        send a message inside a session and print the answer
  session-chat-stream ID MESSAGE the same, streamed
  session-messages ID [--limit N] [--offset N]
                                 print a session's messages
  session-list [--limit N] [--offset N]
                                 list the sessions
  session-delete ID              delete a session and its messages

options:
  --json                 print the server's JSON answers (one event per line for streams)
  --system-prompt TEXT   (chat commands) sent to the model before the conversation
  --no-tools             (chat commands) answer from the conversation alone, without tools
  -h, --help             show this help
  --version              show the version

environment:
  ETLWORKS_URL       the server's root URL, e.g. http://127.0.0.1:8080 (without /rest)
  ETLWORKS_API_KEY   the API key

examples:
  $PROG tools
  $PROG $TOOL_EXAMPLE
  $PROG tool host_cli '{"command": "list connections"}'
  $PROG chat "how do I schedule a flow?"
  $PROG chat-stream "create a connection to api.example.com"
  SID=\$($PROG session-create --title billing)
  $PROG session-chat "\$SID" "create a connection to api.example.com"
  $PROG session-chat-stream "\$SID" "schedule it every hour"
  $PROG session-messages "\$SID"

Needs curl; jq, when installed, makes the output readable (without it some commands print the
server's JSON). Exit codes: 0 ok, 1 the server refused or failed the request (or was
unreachable), 2 usage error.
EOF
}

die_usage() {
  printf 'error: %s\n' "$1" >&2
  exit 2
}

# ----------------------------------------------------------------------------------------------
# JSON without jq: escaping strings for request bodies, reading string fields of answers
# ----------------------------------------------------------------------------------------------

# json_quote TEXT: sets REPLY to TEXT as a JSON string, quotes included.
json_quote() {
  local s=$1 out="" ch i
  s=${s//\\/"\\\\"}
  s=${s//\"/"\\\""}
  s=${s//$'\n'/"\\n"}
  s=${s//$'\r'/"\\r"}
  s=${s//$'\t'/"\\t"}
  if [[ $s =~ [[:cntrl:]] ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      ch=${s:i:1}
      if [[ $ch =~ [[:cntrl:]] ]]; then
        printf -v ch '\\u%04x' "'$ch"
      fi
      out+=$ch
    done
    s=$out
  fi
  REPLY="\"$s\""
}

# json_unescape CONTENTS: sets REPLY to the text of a JSON string's contents (no quotes).
json_unescape() {
  local s=$1 out="" c hex oct ch
  while [[ $s == *\\* ]]; do
    out+=${s%%\\*}
    s=${s#*\\}
    c=${s:0:1}
    s=${s:1}
    case $c in
      n) out+=$'\n' ;;
      t) out+=$'\t' ;;
      r) out+=$'\r' ;;
      b) out+=$'\b' ;;
      f) out+=$'\f' ;;
      u)
        hex=${s:0:4}
        s=${s:4}
        if [[ $hex =~ ^[0-9a-fA-F]{4}$ ]] && ((16#$hex > 0)); then
          # shellcheck disable=SC2059 # the format is the escape being decoded
          if ((16#$hex < 128)); then
            printf -v oct '%03o' "$((16#$hex))"
            printf -v ch "\\$oct"
          else
            printf -v ch "\\u$hex"
          fi
          out+=$ch
        fi
        ;;
      *) out+=$c ;;
    esac
  done
  REPLY=$out$s
}

# json_string FIELD JSON: sets REPLY to the string value of the top-level "FIELD" in JSON;
# returns 1 when there is none. With jq the JSON is read exactly; without it, the compact JSON
# the server writes is read by json_string_plain.
json_string() {
  if [ "$HAVE_JQ" = 1 ]; then
    # The trailing "." keeps the value's own trailing newlines from $(...).
    REPLY=$(printf '%s' "$2" | jq -r --arg f "$1" \
      'if type == "object" and (.[$f] | type) == "string" then .[$f] + "." else empty end' 2>/dev/null)
    [ -n "$REPLY" ] || return 1
    REPLY=${REPLY%.}
    return 0
  fi
  json_string_plain "$1" "$2"
}

# json_string_plain FIELD JSON: json_string without jq: the first "FIELD": "..." in JSON whose
# value is a string. (Inside a JSON string every quote is escaped, so "FIELD" followed by a
# colon cannot match there.)
json_string_plain() {
  local field=$1 rest=$2 piece trail value=""
  while :; do
    case $rest in
      *"\"$field\""*) ;;
      *) return 1 ;;
    esac
    rest=${rest#*"\"$field\""}
    rest=${rest#"${rest%%[![:space:]]*}"}
    [ "${rest:0:1}" = : ] || continue
    rest=${rest:1}
    rest=${rest#"${rest%%[![:space:]]*}"}
    [ "${rest:0:1}" = '"' ] || continue
    rest=${rest:1}
    break
  done
  while :; do
    case $rest in
      *\"*) ;;
      *) return 1 ;;
    esac
    piece=${rest%%\"*}
    rest=${rest#*\"}
    value+=$piece
    # A quote after an odd number of backslashes belongs to the string.
    trail=${piece##*[!\\]}
    if (((${#trail} % 2) == 1)); then
      value+='"'
      continue
    fi
    break
  done
  json_unescape "$value"
}

# json_scalar FIELD JSON: sets REPLY to the top-level number or true/false "FIELD" of JSON.
json_scalar() {
  if [ "$HAVE_JQ" = 1 ]; then
    REPLY=$(printf '%s' "$2" | jq -r --arg f "$1" \
      'if type == "object" and ((.[$f] | type) == "boolean" or (.[$f] | type) == "number") then .[$f] else empty end' 2>/dev/null)
    [ -n "$REPLY" ]
    return
  fi
  local re="\"$1\":[[:space:]]*(true|false|-?[0-9][0-9.eE+-]*)"
  if [[ $2 =~ $re ]]; then
    REPLY=${BASH_REMATCH[1]}
    return 0
  fi
  return 1
}

# pretty JSON: prints JSON readably (jq) or as it came.
pretty() {
  if [ "$HAVE_JQ" = 1 ]; then
    printf '%s\n' "$1" | jq . 2>/dev/null || printf '%s\n' "$1"
  else
    printf '%s\n' "$1"
  fi
}

# ----------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------

setup() {
  if [ -z "${ETLWORKS_URL:-}" ]; then
    die_usage "ETLWORKS_URL is not set; set it to the server's root URL, e.g. export ETLWORKS_URL=http://127.0.0.1:8080"
  fi
  if [ -z "${ETLWORKS_API_KEY:-}" ]; then
    die_usage "ETLWORKS_API_KEY is not set; set it to an API key, e.g. export ETLWORKS_API_KEY=\$(cat data/admin.key)"
  fi
  command -v curl >/dev/null 2>&1 || {
    printf 'error: curl is not installed; install it (e.g. apt-get install curl) and run again\n' >&2
    exit 1
  }
  BASE_URL=${ETLWORKS_URL%/}
  while [ "${BASE_URL%/}" != "$BASE_URL" ]; do BASE_URL=${BASE_URL%/}; done
  BASE_URL=${BASE_URL%"$API_PATH"}
  case $BASE_URL in
    http://?* | https://?*) ;;
    *) die_usage "ETLWORKS_URL '$ETLWORKS_URL' must start with http:// or https://, e.g. http://127.0.0.1:8080" ;;
  esac
  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/etlworks-agent.XXXXXX") || {
    printf 'error: cannot create a temporary directory\n' >&2
    exit 1
  }
  trap 'rm -rf "$WORK_DIR"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # The key goes to curl in a file (mode 0600), never on its command line where ps shows it.
  (
    umask 077
    printf 'Authorization: Bearer %s\n' "$ETLWORKS_API_KEY" >"$WORK_DIR/auth"
  )
}

request_id() {
  local line id=""
  while IFS= read -r line; do
    line=${line%$'\r'}
    case $line in
      [Xx]-[Rr]equest-[Ii][Dd]:*) id=${line#*:} ;;
    esac
  done <"$WORK_DIR/headers"
  id=${id# }
  REPLY=$id
}

connection_error() {
  local reason=""
  [ -s "$WORK_DIR/curl_err" ] && reason=$(tail -n 1 "$WORK_DIR/curl_err")
  reason=${reason#curl: }
  reason=${reason#\(*\) }
  printf 'error: cannot connect to %s: %s; is the etlworks-agent server running there, and is ETLWORKS_URL right?\n' \
    "$BASE_URL" "${reason:-no answer}" >&2
  exit 1
}

# api_error STATUS BODY: prints the server's error on standard error and exits 1 (2 for the
# server's verdict that a tool's JSON arguments are not JSON).
api_error() {
  local status=$1 body=$2 message code="" details="" rid
  request_id
  rid=$REPLY
  if json_string error "$body"; then
    message=$REPLY
  elif [ -n "$body" ]; then
    message="$BASE_URL answered HTTP $status without the API's error body ($(printf '%s' "$body" | head -c 200 | tr '\n' ' ')); is ETLWORKS_URL the etlworks-agent server's root URL?"
  else
    message="$BASE_URL answered HTTP $status"
  fi
  json_string code "$body" && code=$REPLY
  [ "$status" != 200 ] && details="HTTP $status"
  [ -n "$code" ] && details="${details:+$details, }code $code"
  [ -n "$rid" ] && details="${details:+$details, }request id $rid"
  if [ "$JSON_OUT" = 1 ] && [ -n "$body" ]; then
    case $COMMAND in
      *-stream) printf '%s\n' "$body" ;; # one line, like the stream's events
      *) pretty "$body" ;;
    esac
  fi
  if [ "$COMMAND" = tool ] && [ "$status" = 400 ] && [[ $message == *"not valid JSON"* ]]; then
    message=${message#the body is not valid JSON: }
    message=${message%; send one JSON object}
    printf 'error: the tool arguments are not valid JSON: %s; give one JSON object, e.g. %s %s\n' \
      "$message" "$PROG" "$TOOL_EXAMPLE" >&2
    exit 2
  fi
  printf 'error: %s%s\n' "$message" "${details:+ ($details)}" >&2
  exit 1
}

# api METHOD PATH [BODY]: sends one request; on success sets BODY to the answer, else exits.
api() {
  local method=$1 path=$2 status
  local args=(-sS -X "$method" -H "@$WORK_DIR/auth" -H 'Accept: application/json'
    -A "etlworks-agent.sh/$VERSION" -D "$WORK_DIR/headers" -o "$WORK_DIR/body"
    -w '%{http_code}' --connect-timeout 10 --max-time 900)
  if [ $# -ge 3 ]; then
    printf '%s' "$3" >"$WORK_DIR/request"
    args+=(-H 'Content-Type: application/json' --data-binary "@$WORK_DIR/request")
  else
    # Reads and deletes may be sent again: curl retries once on 408/429/5xx (honouring
    # Retry-After) and on a refused connection. Chat and tool calls are never resent.
    args+=(--retry 1 --retry-connrefused)
  fi
  : >"$WORK_DIR/body"
  status=$(curl "${args[@]}" "$BASE_URL$API_PATH$path" 2>"$WORK_DIR/curl_err")
  BODY=$(cat "$WORK_DIR/body")
  case $status in
    2??) ;;
    000 | "") connection_error ;;
    *) api_error "$status" "$BODY" ;;
  esac
  if [[ $BODY =~ ^[[:space:]]*\{ ]]; then
    if json_scalar success "$BODY" && [ "$REPLY" = false ]; then
      # A tool that ran and failed is an answer; any other failure inside a 200 is an error.
      # (Without jq, match the code as text: the tool's own data has nested "code" fields.)
      local code=""
      if [ "$HAVE_JQ" = 1 ]; then
        json_string code "$BODY" && code=$REPLY
      elif [[ $BODY =~ \"code\"[[:space:]]*:[[:space:]]*\"tool_failed\" ]]; then
        code=tool_failed
      fi
      if [ "$COMMAND" != tool ] || [ "$code" != tool_failed ]; then
        api_error 200 "$BODY"
      fi
    fi
  else
    printf 'error: %s answered something that is not the Agent API'"'"'s JSON; is ETLWORKS_URL (%s) the server'"'"'s root URL?\n' \
      "$BASE_URL$API_PATH$path" "$BASE_URL" >&2
    exit 1
  fi
}

# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------

note() {
  printf '%s\n' "$1" >&2
}

# on_event TYPE DATA: shows one server-sent event.
on_event() {
  local kind=$1 data=$2 name ok ms args
  if [ -z "$kind" ] || [ "$kind" = message ]; then
    json_string type "$data" && kind=$REPLY
  fi
  if [ "$JSON_OUT" = 1 ]; then
    printf '%s\n' "$data"
  fi
  case $kind in
    token)
      if [ "$JSON_OUT" = 0 ] && { json_string_plain content "$data" || json_string content "$data"; }; then
        printf '%s' "$REPLY"
        [ -n "$REPLY" ] && { [ "${REPLY: -1}" = $'\n' ] && MID_LINE=0 || MID_LINE=1; }
      fi
      ;;
    tool_start | tool_end)
      [ "$JSON_OUT" = 1 ] && return 0
      json_string name "$data" && name=$REPLY || name='?'
      if [ "$kind" = tool_start ]; then
        args=""
        if [ "$HAVE_JQ" = 1 ]; then
          args=$(printf '%s' "$data" | jq -c '.arguments // {}' 2>/dev/null)
        elif [[ $data =~ \"arguments\"[[:space:]]*:[[:space:]]*(\{.*\})[[:space:]]*\}$ ]]; then
          args=${BASH_REMATCH[1]}
        fi
        note "[tool $name${args:+ $args}]"
      else
        json_scalar success "$data" && ok=$REPLY || ok=false
        json_scalar duration_ms "$data" && ms=$REPLY || ms='?'
        if [ "$ok" = true ]; then
          note "[tool $name ok, $ms ms]"
        else
          json_string result "$data" || REPLY=""
          note "[tool $name failed, $ms ms: ${REPLY%%$'\n'*}]"
        fi
      fi
      ;;
    done)
      SAW_DONE=1
      [ "$JSON_OUT" = 0 ] && [ "$MID_LINE" = 1 ] && printf '\n'
      ;;
    error)
      SAW_ERROR=1
      ERROR_DATA=$data
      ;;
  esac
}

# stream PATH BODY: posts a chat and shows its events as they arrive.
stream() {
  local path=$1 line event="" data="" have_data=0 status="" other=""
  SAW_DONE=0
  SAW_ERROR=0
  MID_LINE=0
  ERROR_DATA=""
  printf '%s' "$2" >"$WORK_DIR/request"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    case $line in
      "$STATUS_MARK "*)
        status=${line#"$STATUS_MARK "}
        ;;
      "")
        if [ "$have_data" = 1 ]; then
          on_event "$event" "$data"
        fi
        event=""
        data=""
        have_data=0
        ;;
      :*) ;;
      event:*)
        event=${line#event:}
        event=${event# }
        ;;
      data:*)
        line=${line#data:}
        line=${line# }
        if [ "$have_data" = 1 ]; then
          data+=$'\n'$line
        else
          data=$line
          have_data=1
        fi
        ;;
      id:* | retry:*) ;;
      *) other+=$line$'\n' ;;
    esac
  done < <(curl -sS -N -X POST -H "@$WORK_DIR/auth" -H 'Content-Type: application/json' \
    -H 'Accept: text/event-stream' -A "etlworks-agent.sh/$VERSION" -D "$WORK_DIR/headers" \
    --connect-timeout 10 --speed-limit 1 --speed-time 120 --data-binary "@$WORK_DIR/request" \
    -w "\n$STATUS_MARK %{http_code}\n" "$BASE_URL$API_PATH$path" 2>"$WORK_DIR/curl_err")
  case $status in
    2??) ;;
    000 | "")
      if [ "$SAW_DONE" = 0 ] && [ "$SAW_ERROR" = 0 ] && [ ! -s "$WORK_DIR/headers" ]; then
        connection_error
      fi
      ;;
    *) api_error "$status" "${other%$'\n'}" ;;
  esac
  if [ "$SAW_ERROR" = 1 ]; then
    [ "$JSON_OUT" = 0 ] && [ "$MID_LINE" = 1 ] && printf '\n'
    JSON_OUT=0 api_error 200 "$ERROR_DATA"
  fi
  if [ "$SAW_DONE" = 0 ]; then
    [ "$MID_LINE" = 1 ] && printf '\n'
    if [ -n "$other" ] && [[ $other =~ ^[[:space:]]*\{ ]]; then
      api_error 200 "${other%$'\n'}"
    fi
    printf 'error: the stream ended before its '"'"'done'"'"' event: the server closed the connection early (did it stop, or did a proxy cut the connection?)\n' >&2
    exit 1
  fi
}

# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

# chat_body MESSAGE: sets REPLY to the JSON body of a chat request.
chat_body() {
  local body
  json_quote "$1"
  body="{\"message\":$REPLY"
  if [ -n "$SYSTEM_PROMPT" ]; then
    json_quote "$SYSTEM_PROMPT"
    body+=",\"system_prompt\":$REPLY"
  fi
  [ "$NO_TOOLS" = 1 ] && body+=',"include_tools":false'
  REPLY="$body}"
}

print_text_field() {
  local field=$1
  if [ "$JSON_OUT" = 1 ]; then
    pretty "$BODY"
  elif json_string "$field" "$BODY"; then
    printf '%s' "$REPLY"
    [ "${REPLY: -1}" = $'\n' ] || printf '\n'
  else
    pretty "$BODY"
  fi
}

print_tools() {
  local rest names=() flags=() i re_name='"name":"([^"]*)"' re_flag='"agentic":(true|false)'
  if [ "$JSON_OUT" = 1 ]; then
    pretty "$BODY"
  elif [ "$HAVE_JQ" = 1 ]; then
    printf '%s' "$BODY" | jq -r '.tools[]
      | (.name + (if .agentic then " (agentic)" else "" end)) as $tool_label
      | (.description | split(". ")[0]) as $summary
      | $tool_label + (" " * ([32 - ($tool_label | length), 1] | max))
        + (if ($summary | length) > 110 then $summary[0:107] + "..." else $summary end)'
  else
    # Each tool has one string "name" and one "agentic", in that order; schemas hold neither.
    rest=$BODY
    while [[ $rest =~ $re_name ]]; do
      names+=("${BASH_REMATCH[1]}")
      rest=${rest#*"${BASH_REMATCH[0]}"}
    done
    rest=$BODY
    while [[ $rest =~ $re_flag ]]; do
      flags+=("${BASH_REMATCH[1]}")
      rest=${rest#*"${BASH_REMATCH[0]}"}
    done
    for ((i = 0; i < ${#names[@]}; i++)); do
      if [ "${flags[i]:-false}" = true ]; then
        printf '%s (agentic)\n' "${names[i]}"
      else
        printf '%s\n' "${names[i]}"
      fi
    done
    printf '(install jq to see the descriptions, or add --json for the schemas)\n'
  fi
}

print_sessions() {
  if [ "$JSON_OUT" = 1 ] || [ "$HAVE_JQ" = 0 ]; then
    pretty "$BODY"
    return
  fi
  printf '%s' "$BODY" | jq -r 'if (.sessions | length) == 0 then "no sessions" else
    (.sessions[] | "\(.id)  \(.message_count | tostring | (" " * ([4 - length, 0] | max)) + .) messages  updated \(.updated_at)  \(.title // "-")"),
    (if (.total // 0) > (.sessions | length) then "(\(.sessions | length) of \(.total); see --limit and --offset)" else empty end)
    end'
}

print_messages() {
  if [ "$JSON_OUT" = 1 ] || [ "$HAVE_JQ" = 0 ]; then
    pretty "$BODY"
    return
  fi
  printf '%s' "$BODY" | jq -r 'if (.messages | length) == 0 then "no messages" else .messages[]
    | ("#\(.id) \(.role)" + (if .role == "tool" then " \(.name) (\(if .success then "ok" else "failed" end))" else "" end)) as $head
    | ((.content // "") as $c | if $c != "" then "\($head): \($c)" else empty end),
      ((.tool_calls // [])[] | "\($head): calls \(.name) \(.arguments | tojson)"),
      (if (.content // "") == "" and ((.tool_calls // []) | length) == 0 then "\($head): (empty)" else empty end)
    end'
}

check_tool_arguments() {
  local args=$1 err
  if [ "$HAVE_JQ" = 1 ]; then
    if ! err=$(printf '%s' "$args" | jq -e 'type == "object"' 2>&1 >/dev/null); then
      if [ -n "$err" ]; then
        err=${err#jq: error (at <stdin>:*): }
        die_usage "the tool arguments are not valid JSON: ${err//$'\n'/ }; give one JSON object, e.g. $PROG $TOOL_EXAMPLE"
      fi
      die_usage "the tool arguments must be a JSON object; e.g. $PROG $TOOL_EXAMPLE"
    fi
  elif ! [[ $args =~ ^[[:space:]]*\{ ]]; then
    die_usage "the tool arguments must be a JSON object; e.g. $PROG $TOOL_EXAMPLE"
  fi
  # Without jq the server checks the rest: its parse error comes back as a usage error.
}

url_segment() {
  local s=$1 out="" ch i
  for ((i = 0; i < ${#s}; i++)); do
    ch=${s:i:1}
    case $ch in
      [a-zA-Z0-9._~-]) out+=$ch ;;
      *) printf -v ch '%%%02X' "'$ch" && out+=$ch ;;
    esac
  done
  REPLY=$out
}

page_query() {
  local q=""
  [ -n "$LIMIT" ] && q="limit=$LIMIT"
  [ -n "$OFFSET" ] && q="${q:+$q&}offset=$OFFSET"
  REPLY=${q:+?$q}
}

need_args() { # COUNT NAMES...
  local want=$1
  shift
  if [ "${#POSITIONAL[@]}" -ne "$want" ]; then
    die_usage "'$COMMAND' takes $want argument(s) ($*), got ${#POSITIONAL[@]}; see '$PROG --help'"
  fi
}

main() {
  JSON_OUT=0
  SYSTEM_PROMPT=""
  NO_TOOLS=0
  TITLE=""
  LIMIT=""
  OFFSET=""
  COMMAND=""
  POSITIONAL=()
  local used_options="" opt
  while [ $# -gt 0 ]; do
    case $1 in
      --json) JSON_OUT=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      --version)
        printf '%s %s\n' "$PROG" "$VERSION"
        exit 0
        ;;
      --system-prompt | --title | --limit | --offset)
        [ $# -ge 2 ] || die_usage "$1 needs a value; see '$PROG --help'"
        case $1 in
          --system-prompt) SYSTEM_PROMPT=$2 ;;
          --title) TITLE=$2 ;;
          --limit) LIMIT=$2 ;;
          --offset) OFFSET=$2 ;;
        esac
        used_options+=" $1"
        shift
        ;;
      --no-tools)
        NO_TOOLS=1
        used_options+=" $1"
        ;;
      --)
        shift
        while [ $# -gt 0 ]; do
          if [ -z "$COMMAND" ]; then COMMAND=$1; else POSITIONAL+=("$1"); fi
          shift
        done
        break
        ;;
      -?*) die_usage "unknown option '$1'; see '$PROG --help'" ;;
      *)
        if [ -z "$COMMAND" ]; then COMMAND=$1; else POSITIONAL+=("$1"); fi
        ;;
    esac
    shift
  done
  [ -n "$COMMAND" ] || {
    usage >&2
    exit 2
  }

  local allowed=""
  case $COMMAND in
    tools | session-delete) ;;
    tool) ;;
    chat | chat-stream | session-chat | session-chat-stream) allowed="--system-prompt --no-tools" ;;
    session-create) allowed="--title --system-prompt" ;;
    session-messages | session-list) allowed="--limit --offset" ;;
    *) die_usage "unknown command '$COMMAND'; the commands are tools, tool, chat, chat-stream, session-create, session-chat, session-chat-stream, session-messages, session-list, session-delete" ;;
  esac
  for opt in $used_options; do
    case " $allowed " in
      *" $opt "*) ;;
      *) die_usage "'$COMMAND' does not take $opt; see '$PROG --help'" ;;
    esac
  done
  for opt in "$LIMIT" "$OFFSET"; do
    [ -z "$opt" ] || [[ $opt =~ ^[0-9]+$ ]] || die_usage "--limit and --offset take whole numbers, got '$opt'"
  done

  HAVE_JQ=0
  command -v jq >/dev/null 2>&1 && HAVE_JQ=1

  local tool_args="{}"
  case $COMMAND in
    tools | session-list) need_args 0 ;;
    tool)
      if [ "${#POSITIONAL[@]}" -lt 1 ] || [ "${#POSITIONAL[@]}" -gt 2 ]; then
        die_usage "'tool' takes a tool name and optionally its arguments as JSON, e.g. $PROG $TOOL_EXAMPLE"
      fi
      [ "${#POSITIONAL[@]}" -eq 2 ] && tool_args=${POSITIONAL[1]}
      check_tool_arguments "$tool_args"
      ;;
    chat | chat-stream) need_args 1 MESSAGE ;;
    session-create) need_args 0 ;;
    session-chat | session-chat-stream) need_args 2 ID MESSAGE ;;
    session-messages | session-delete) need_args 1 ID ;;
  esac

  setup

  local body id
  case $COMMAND in
    tools)
      api GET /tools
      print_tools
      ;;
    tool)
      url_segment "${POSITIONAL[0]}"
      api POST "/tools/$REPLY/execute" "$tool_args"
      print_text_field result
      if json_scalar success "$BODY" && [ "$REPLY" = false ]; then
        printf "error: the tool '%s' ran and failed (code tool_failed)\n" "${POSITIONAL[0]}" >&2
        exit 1
      fi
      ;;
    chat)
      chat_body "${POSITIONAL[0]}"
      api POST /chat "$REPLY"
      print_text_field response
      ;;
    chat-stream)
      chat_body "${POSITIONAL[0]}"
      stream /chat/stream "$REPLY"
      ;;
    session-create)
      body="{"
      if [ -n "$TITLE" ]; then
        json_quote "$TITLE"
        body+="\"title\":$REPLY"
      fi
      if [ -n "$SYSTEM_PROMPT" ]; then
        json_quote "$SYSTEM_PROMPT"
        [ "$body" = "{" ] || body+=","
        body+="\"system_prompt\":$REPLY"
      fi
      api POST /sessions "$body}"
      if [ "$JSON_OUT" = 1 ]; then
        pretty "$BODY"
      elif json_string session_id "$BODY"; then
        printf '%s\n' "$REPLY"
      else
        printf 'error: the server created a session but did not say its id: %s\n' "$BODY" >&2
        exit 1
      fi
      ;;
    session-chat)
      url_segment "${POSITIONAL[0]}"
      id=$REPLY
      chat_body "${POSITIONAL[1]}"
      api POST "/sessions/$id/chat" "$REPLY"
      print_text_field response
      ;;
    session-chat-stream)
      url_segment "${POSITIONAL[0]}"
      id=$REPLY
      chat_body "${POSITIONAL[1]}"
      stream "/sessions/$id/chat/stream" "$REPLY"
      ;;
    session-messages)
      url_segment "${POSITIONAL[0]}"
      id=$REPLY
      page_query
      api GET "/sessions/$id/messages$REPLY"
      print_messages
      ;;
    session-list)
      page_query
      api GET "/sessions$REPLY"
      print_sessions
      ;;
    session-delete)
      url_segment "${POSITIONAL[0]}"
      api DELETE "/sessions/$REPLY"
      if [ "$JSON_OUT" = 1 ]; then
        pretty "$BODY"
      else
        printf 'deleted session %s\n' "${POSITIONAL[0]}"
      fi
      ;;
  esac
  exit 0
}

main "$@"
