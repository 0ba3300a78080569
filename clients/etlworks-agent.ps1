<#
.SYNOPSIS
    Talk to an etlworks-agent server (the Etlworks AI Agent API): tools, chat, streaming and sessions.

.DESCRIPTION
    The PowerShell twin of etlworks-agent.sh and the Python client's command line: the same
    commands, options, environment variables and exit codes. Works on PowerShell 7 on any
    operating system and on Windows PowerShell 5.1, with nothing to install.

    Requests go through System.Net.Http.HttpClient rather than Invoke-RestMethod: it reads a
    stream line by line as it arrives, decodes the server's UTF-8 answers the same way on 5.1
    and 7 (Windows PowerShell 5.1's Invoke-RestMethod decodes JSON without a charset as
    ISO-8859-1), and gives the status, error body and request id of a failed request alike on
    both.

        $env:ETLWORKS_URL = 'http://127.0.0.1:8080'      # the server's root, without /rest
        $env:ETLWORKS_API_KEY = '...'
        ./etlworks-agent.ps1 chat-stream 'list connections'

    Exit codes: 0 ok; 1 the server refused or failed the request, or could not be reached;
    2 usage error (bad arguments, invalid JSON, ETLWORKS_URL or ETLWORKS_API_KEY not set).

.EXAMPLE
    ./etlworks-agent.ps1 tool search_knowledge_base '{"query": "merge keys", "limit": 3}'

.EXAMPLE
    $sid = ./etlworks-agent.ps1 session-create --title billing
    ./etlworks-agent.ps1 session-chat $sid 'create a connection to api.example.com'
    ./etlworks-agent.ps1 session-chat-stream $sid 'schedule it every hour'
#>

# No param() block: the arguments are read from $args so that --json, --help and the other
# options are spelled exactly as in the bash and Python clients.
$ErrorActionPreference = 'Stop'

$Version = '0.1.0'
$ApiPath = '/rest/v1/ai-agent/api'
$Prog = 'etlworks-agent.ps1'
if ($MyInvocation.MyCommand.Name) { $Prog = $MyInvocation.MyCommand.Name }
$ToolExample = "tool search_knowledge_base '{`"query`": `"merge keys`", `"limit`": 3}'"
# The commands, in the order --help shows them (the same as etlworks-agent.sh and the Python CLI).
$Commands = @('tools', 'tool', 'chat', 'chat-stream', 'session-create', 'session-chat',
    'session-chat-stream', 'session-messages', 'session-list', 'session-delete')
$ScriptArgs = @($args)

function Show-Usage {
    @"
usage: $Prog [--json] COMMAND [ARGS...]

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
  $Prog tools
  $Prog $ToolExample
  $Prog chat 'how do I schedule a flow?'
  `$sid = $Prog session-create --title billing
  $Prog session-chat `$sid 'create a connection to api.example.com'
  $Prog session-messages `$sid

Exit codes: 0 ok, 1 the server refused or failed the request (or was unreachable), 2 usage error.
"@
}

function Write-Err([string]$Message) {
    [Console]::Error.WriteLine($Message)
}

function Exit-Usage([string]$Message) {
    Write-Err "error: $Message"
    exit 2
}

# Get-Prop OBJECT NAME: a property of a parsed JSON object, or nothing when it is missing.
function Get-Prop($Object, [string]$Name) {
    if ($null -eq $Object) { return }
    $property = $Object.PSObject.Properties[$Name]
    if ($null -eq $property) { return }
    return $property.Value
}

function ConvertTo-CompactJson($Value) {
    if ($null -eq $Value) { return '{}' }
    return (ConvertTo-Json -InputObject $Value -Compress -Depth 20)
}

function Get-Reason([System.Exception]$Exception) {
    # The innermost exception says what really happened (e.g. "Connection refused").
    $e = $Exception
    while ($null -ne $e.InnerException) { $e = $e.InnerException }
    return $e.Message
}

# ----------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------

function Initialize-Client {
    $url = $env:ETLWORKS_URL
    if ([string]::IsNullOrWhiteSpace($url)) {
        Exit-Usage "ETLWORKS_URL is not set; set it to the server's root URL, e.g. `$env:ETLWORKS_URL = 'http://127.0.0.1:8080'"
    }
    if ([string]::IsNullOrWhiteSpace($env:ETLWORKS_API_KEY)) {
        Exit-Usage "ETLWORKS_API_KEY is not set; set it to an API key, e.g. `$env:ETLWORKS_API_KEY = Get-Content data/admin.key"
    }
    $url = $url.Trim().TrimEnd('/')
    if ($url.EndsWith($ApiPath, [System.StringComparison]::OrdinalIgnoreCase)) {
        $url = $url.Substring(0, $url.Length - $ApiPath.Length)
    }
    if ($url -notmatch '^https?://[^/]') {
        Exit-Usage "ETLWORKS_URL '$($env:ETLWORKS_URL)' must start with http:// or https://, e.g. http://127.0.0.1:8080"
    }
    $script:BaseUrl = $url
    Add-Type -AssemblyName System.Net.Http
    if ($PSVersionTable.PSVersion.Major -lt 6) {
        # .NET Framework may not offer TLS 1.2 by default.
        [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
    }
    $script:Http = New-Object System.Net.Http.HttpClient
    # Streams may stay quiet between events; the server sends a keep-alive every 15 s.
    $script:Http.Timeout = [System.TimeSpan]::FromMinutes(15)
    $script:Http.DefaultRequestHeaders.Authorization = New-Object System.Net.Http.Headers.AuthenticationHeaderValue('Bearer', $env:ETLWORKS_API_KEY.Trim())
    [void]$script:Http.DefaultRequestHeaders.UserAgent.TryParseAdd("etlworks-agent.ps1/$Version")
}

function Get-RequestId($Response) {
    $values = $null
    if ($Response.Headers.TryGetValues('x-request-id', [ref]$values)) { return @($values)[0] }
    return $null
}

function Read-Body($Response) {
    $bytes = $Response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult()
    return [System.Text.Encoding]::UTF8.GetString($bytes)
}

function Exit-ConnectionError([string]$Reason) {
    Write-Err "error: cannot connect to $($script:BaseUrl): $Reason; is the etlworks-agent server running there, and is ETLWORKS_URL right?"
    exit 1
}

# Exit-ApiError STATUS BODY REQUESTID: prints the server's error on standard error and exits 1.
function Exit-ApiError([int]$Status, [string]$Body, $RequestId) {
    $parsed = $null
    try { $parsed = ConvertFrom-Json -InputObject $Body } catch { $parsed = $null }
    $message = Get-Prop $parsed 'error'
    $code = Get-Prop $parsed 'code'
    if (-not ($message -is [string])) {
        $text = ($Body -replace '\s+', ' ')
        if ($text.Length -gt 200) { $text = $text.Substring(0, 200) }
        if ($text) {
            $message = "$($script:BaseUrl) answered HTTP $Status without the API's error body ($text); is ETLWORKS_URL the etlworks-agent server's root URL?"
        } else {
            $message = "$($script:BaseUrl) answered HTTP $Status"
        }
    }
    if ($script:Command -eq 'tool' -and $Status -eq 400 -and $message -like '*not valid JSON*') {
        $message = $message -replace '^the body is not valid JSON: ', '' -replace '; send one JSON object$', ''
        Write-Err "error: the tool arguments are not valid JSON: $message; give one JSON object, e.g. $Prog $ToolExample"
        exit 2
    }
    $details = @()
    if ($Status -ne 200) { $details += "HTTP $Status" }
    if ($code) { $details += "code $code" }
    if ($RequestId) { $details += "request id $RequestId" }
    if ($script:JsonOut -and $Body) { Write-Output $Body }
    if ($details.Count -gt 0) { $message = "$message ($($details -join ', '))" }
    Write-Err "error: $message"
    exit 1
}

# Send-Api METHOD PATH [BODY] [-Stream]: sends one request and returns the (2xx) response;
# exits with the error otherwise. Reads and deletes are retried on 429, 5xx and connection
# failures; chat and tool calls only on 429 and 503, which the server answers before acting.
function Send-Api([string]$Method, [string]$Path, $Body = $null, [switch]$Stream) {
    $idempotent = ($Method -eq 'GET' -or $Method -eq 'DELETE')
    $attempt = 0
    while ($true) {
        $request = New-Object System.Net.Http.HttpRequestMessage((New-Object System.Net.Http.HttpMethod($Method)), "$($script:BaseUrl)$ApiPath$Path")
        if ($Stream) { $request.Headers.Accept.ParseAdd('text/event-stream') } else { $request.Headers.Accept.ParseAdd('application/json') }
        if ($null -ne $Body) {
            $request.Content = New-Object System.Net.Http.StringContent($Body, [System.Text.Encoding]::UTF8, 'application/json')
        }
        $completion = [System.Net.Http.HttpCompletionOption]::ResponseContentRead
        if ($Stream) { $completion = [System.Net.Http.HttpCompletionOption]::ResponseHeadersRead }
        $response = $null
        try {
            $response = $script:Http.SendAsync($request, $completion).GetAwaiter().GetResult()
        } catch {
            if ($idempotent -and $attempt -lt 2) {
                Start-Sleep -Milliseconds ([int](250 * [math]::Pow(2, $attempt)))
                $attempt++
                continue
            }
            Exit-ConnectionError (Get-Reason $_.Exception)
        }
        $status = [int]$response.StatusCode
        if ($status -lt 400) { return $response }
        $retryable = ($status -eq 429 -or $status -eq 503 -or ($status -ge 500 -and $idempotent))
        if ($retryable -and $attempt -lt 2) {
            $wait = 0.25 * [math]::Pow(2, $attempt)
            if ($null -ne $response.Headers.RetryAfter -and $null -ne $response.Headers.RetryAfter.Delta) {
                $wait = $response.Headers.RetryAfter.Delta.TotalSeconds
            }
            if ($wait -le 60) {
                $response.Dispose()
                Start-Sleep -Milliseconds ([int]($wait * 1000))
                $attempt++
                continue
            }
        }
        Exit-ApiError $status (Read-Body $response) (Get-RequestId $response)
    }
}

# Invoke-Api METHOD PATH [BODY]: sends a request and returns @(parsed answer, raw text).
function Invoke-Api([string]$Method, [string]$Path, $Body = $null) {
    $response = Send-Api $Method $Path $Body
    $text = Read-Body $response
    $requestId = Get-RequestId $response
    $response.Dispose()
    try {
        $parsed = ConvertFrom-Json -InputObject $text
    } catch {
        Write-Err "error: $($script:BaseUrl)$ApiPath$Path answered something that is not the Agent API's JSON; is ETLWORKS_URL ($($script:BaseUrl)) the server's root URL?"
        exit 1
    }
    if ((Get-Prop $parsed 'success') -eq $false) {
        if (-not ($script:Command -eq 'tool' -and (Get-Prop $parsed 'code') -eq 'tool_failed')) {
            Exit-ApiError 200 $text $requestId
        }
    }
    return , @($parsed, $text)
}

# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------

function Show-Event([string]$Name, [string]$Data) {
    $sse = $null
    try { $sse = ConvertFrom-Json -InputObject $Data } catch {
        Write-Err "error: the server sent a '$Name' event whose data is not JSON: $Data"
        exit 1
    }
    $kind = Get-Prop $sse 'type'
    if (-not $kind) { $kind = $Name }
    if ($script:JsonOut) {
        [Console]::Out.WriteLine($Data)
        [Console]::Out.Flush()
    }
    switch ($kind) {
        'token' {
            if (-not $script:JsonOut) {
                $content = [string](Get-Prop $sse 'content')
                [Console]::Out.Write($content)
                [Console]::Out.Flush()
                if ($content.Length -gt 0) { $script:MidLine = -not $content.EndsWith("`n") }
            }
        }
        'tool_start' {
            if (-not $script:JsonOut) {
                $arguments = ConvertTo-CompactJson (Get-Prop $sse 'arguments')
                Write-Err "[tool $(Get-Prop $sse 'name') $arguments]"
            }
        }
        'tool_end' {
            if (-not $script:JsonOut) {
                $name = Get-Prop $sse 'name'
                $ms = Get-Prop $sse 'duration_ms'
                if ((Get-Prop $sse 'success') -eq $true) {
                    Write-Err "[tool $name ok, $ms ms]"
                } else {
                    $first = ([string](Get-Prop $sse 'result') -split "`n")[0]
                    Write-Err "[tool $name failed, $ms ms: $first]"
                }
            }
        }
        'done' {
            $script:SawDone = $true
            if (-not $script:JsonOut -and $script:MidLine) { [Console]::Out.WriteLine() }
        }
        'error' {
            if (-not $script:JsonOut -and $script:MidLine) { [Console]::Out.WriteLine() }
            $script:JsonOut = $false
            Exit-ApiError 200 $Data $script:StreamRequestId
        }
    }
}

# Invoke-Stream PATH BODY: posts a chat and shows its server-sent events as they arrive.
function Invoke-Stream([string]$Path, [string]$Body) {
    $response = Send-Api 'POST' $Path $Body -Stream
    $script:StreamRequestId = Get-RequestId $response
    $script:SawDone = $false
    $script:MidLine = $false
    $stream = $response.Content.ReadAsStreamAsync().GetAwaiter().GetResult()
    $reader = New-Object System.IO.StreamReader($stream, [System.Text.Encoding]::UTF8)
    $eventName = ''
    $data = New-Object System.Collections.Generic.List[string]
    try {
        while ($true) {
            $line = $reader.ReadLine()
            if ($null -eq $line) { break }
            if ($line.Length -eq 0) {
                if ($data.Count -gt 0) {
                    Show-Event $eventName ($data -join "`n")
                    if ($script:SawDone) { break }
                }
                $eventName = ''
                $data.Clear()
                continue
            }
            if ($line.StartsWith(':')) { continue }
            $colon = $line.IndexOf(':')
            if ($colon -lt 0) { $field = $line; $value = '' } else {
                $field = $line.Substring(0, $colon)
                $value = $line.Substring($colon + 1)
                if ($value.StartsWith(' ')) { $value = $value.Substring(1) }
            }
            if ($field -eq 'event') { $eventName = $value }
            elseif ($field -eq 'data') { $data.Add($value) }
        }
    } catch {
        if ($script:MidLine) { [Console]::Out.WriteLine() }
        Write-Err "error: the stream broke before its 'done' event: $(Get-Reason $_.Exception)"
        exit 1
    } finally {
        $reader.Dispose()
        $response.Dispose()
    }
    if (-not $script:SawDone) {
        if ($script:MidLine) { [Console]::Out.WriteLine() }
        Write-Err "error: the stream ended before its 'done' event: the server closed the connection early (did it stop, or did a proxy cut the connection?)"
        exit 1
    }
}

# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

function Get-ChatBody([string]$Message) {
    $body = [ordered]@{ message = $Message }
    if ($script:SystemPrompt) { $body['system_prompt'] = $script:SystemPrompt }
    if ($script:NoTools) { $body['include_tools'] = $false }
    return (ConvertTo-Json -InputObject $body -Compress)
}

function Get-Segment([string]$Value) {
    return [System.Uri]::EscapeDataString($Value)
}

function Get-PageQuery {
    $parts = @()
    if ($script:Limit) { $parts += "limit=$($script:Limit)" }
    if ($script:Offset) { $parts += "offset=$($script:Offset)" }
    if ($parts.Count -eq 0) { return '' }
    return '?' + ($parts -join '&')
}

function Write-Text([string]$Text) {
    if ($Text.EndsWith("`n")) { $Text = $Text.Substring(0, $Text.Length - 1) }
    Write-Output $Text
}

function Show-Tools($Answer) {
    foreach ($tool in @(Get-Prop $Answer 'tools')) {
        $label = [string](Get-Prop $tool 'name')
        if ((Get-Prop $tool 'agentic') -eq $true) { $label += ' (agentic)' }
        $summary = ([string](Get-Prop $tool 'description') -split '\. ', 2)[0]
        if ($summary.Length -gt 110) { $summary = $summary.Substring(0, 107) + '...' }
        Write-Output ('{0,-31} {1}' -f $label, $summary)
    }
}

# Format-Time VALUE: PowerShell 7's ConvertFrom-Json turns ISO 8601 strings into dates; show
# them as the server wrote them.
function Format-Time($Value) {
    if ($Value -is [DateTime]) { return $Value.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'") }
    return [string]$Value
}

function Show-Sessions($Answer) {
    $sessions = @(Get-Prop $Answer 'sessions')
    if ($sessions.Count -eq 0) { Write-Output 'no sessions'; return }
    foreach ($s in $sessions) {
        $title = Get-Prop $s 'title'
        if (-not $title) { $title = '-' }
        Write-Output ('{0}  {1,4} messages  updated {2}  {3}' -f (Get-Prop $s 'id'), (Get-Prop $s 'message_count'), (Format-Time (Get-Prop $s 'updated_at')), $title)
    }
    $total = Get-Prop $Answer 'total'
    if ($null -ne $total -and $total -gt $sessions.Count) {
        Write-Output "($($sessions.Count) of $total; see --limit and --offset)"
    }
}

function Show-Messages($Answer) {
    $messages = @(Get-Prop $Answer 'messages')
    if ($messages.Count -eq 0) { Write-Output 'no messages'; return }
    foreach ($m in $messages) {
        $role = Get-Prop $m 'role'
        $head = "#$(Get-Prop $m 'id') $role"
        if ($role -eq 'tool') {
            $outcome = 'failed'
            if ((Get-Prop $m 'success') -eq $true) { $outcome = 'ok' }
            $head += " $(Get-Prop $m 'name') ($outcome)"
        }
        $content = [string](Get-Prop $m 'content')
        $calls = @(Get-Prop $m 'tool_calls')
        if ($content) { Write-Output "${head}: $content" }
        foreach ($call in $calls) {
            Write-Output "${head}: calls $(Get-Prop $call 'name') $(ConvertTo-CompactJson (Get-Prop $call 'arguments'))"
        }
        if (-not $content -and $calls.Count -eq 0) { Write-Output "${head}: (empty)" }
    }
}

function Assert-ArgCount([int]$Want, [string]$Names) {
    if ($script:Positional.Count -ne $Want) {
        Exit-Usage "'$($script:Command)' takes $Want argument(s) ($Names), got $($script:Positional.Count); see '$Prog --help'"
    }
}

# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

$script:JsonOut = $false
$script:SystemPrompt = $null
$script:NoTools = $false
$script:Title = $null
$script:Limit = $null
$script:Offset = $null
$script:Command = $null
$script:Positional = New-Object System.Collections.Generic.List[string]
$usedOptions = @()

$i = 0
$rest = $false
while ($i -lt $ScriptArgs.Count) {
    $arg = [string]$ScriptArgs[$i]
    if ($rest -or -not $arg.StartsWith('-') -or $arg -eq '-') {
        if ($null -eq $script:Command) { $script:Command = $arg } else { $script:Positional.Add($arg) }
    } else {
        switch -CaseSensitive ($arg) {
            '--json' { $script:JsonOut = $true }
            { $_ -in @('-h', '--help', '-help', '-?') } { Show-Usage; exit 0 }
            '--version' { Write-Output "$Prog $Version"; exit 0 }
            { $_ -in @('--system-prompt', '--title', '--limit', '--offset') } {
                if ($i + 1 -ge $ScriptArgs.Count) { Exit-Usage "$arg needs a value; see '$Prog --help'" }
                $value = [string]$ScriptArgs[$i + 1]
                switch ($arg) {
                    '--system-prompt' { $script:SystemPrompt = $value }
                    '--title' { $script:Title = $value }
                    '--limit' { $script:Limit = $value }
                    '--offset' { $script:Offset = $value }
                }
                $usedOptions += $arg
                $i++
            }
            '--no-tools' { $script:NoTools = $true; $usedOptions += $arg }
            '--' { $rest = $true }
            default { Exit-Usage "unknown option '$arg'; see '$Prog --help'" }
        }
    }
    $i++
}

if ($null -eq $script:Command) {
    [Console]::Error.WriteLine((Show-Usage | Out-String))
    exit 2
}
if ($Commands -notcontains $script:Command) {
    Exit-Usage "unknown command '$($script:Command)'; the commands are $($Commands -join ', ')"
}
$allowed = @()
switch ($script:Command) {
    { $_ -in @('chat', 'chat-stream', 'session-chat', 'session-chat-stream') } { $allowed = @('--system-prompt', '--no-tools') }
    'session-create' { $allowed = @('--title', '--system-prompt') }
    { $_ -in @('session-messages', 'session-list') } { $allowed = @('--limit', '--offset') }
}
foreach ($opt in $usedOptions) {
    if ($allowed -notcontains $opt) { Exit-Usage "'$($script:Command)' does not take $opt; see '$Prog --help'" }
}
foreach ($n in @($script:Limit, $script:Offset)) {
    if ($null -ne $n -and $n -notmatch '^[0-9]+$') { Exit-Usage "--limit and --offset take whole numbers, got '$n'" }
}

$toolArgs = '{}'
switch ($script:Command) {
    { $_ -in @('tools', 'session-list', 'session-create') } { Assert-ArgCount 0 '' }
    'tool' {
        if ($script:Positional.Count -lt 1 -or $script:Positional.Count -gt 2) {
            Exit-Usage "'tool' takes a tool name and optionally its arguments as JSON, e.g. $Prog $ToolExample"
        }
        if ($script:Positional.Count -eq 2) { $toolArgs = $script:Positional[1] }
        try {
            $parsedArgs = ConvertFrom-Json -InputObject $toolArgs
        } catch {
            Exit-Usage "the tool arguments are not valid JSON: $(Get-Reason $_.Exception); give one JSON object, e.g. $Prog $ToolExample"
        }
        if (-not ($parsedArgs -is [System.Management.Automation.PSCustomObject])) {
            Exit-Usage "the tool arguments must be a JSON object; e.g. $Prog $ToolExample"
        }
    }
    { $_ -in @('chat', 'chat-stream') } { Assert-ArgCount 1 'MESSAGE' }
    { $_ -in @('session-chat', 'session-chat-stream') } { Assert-ArgCount 2 'ID MESSAGE' }
    { $_ -in @('session-messages', 'session-delete') } { Assert-ArgCount 1 'ID' }
}

Initialize-Client

switch ($script:Command) {
    'tools' {
        $answer, $text = Invoke-Api 'GET' '/tools'
        if ($script:JsonOut) { Write-Output $text } else { Show-Tools $answer }
    }
    'tool' {
        $name = $script:Positional[0]
        $answer, $text = Invoke-Api 'POST' "/tools/$(Get-Segment $name)/execute" $toolArgs
        if ($script:JsonOut) { Write-Output $text } else {
            $result = Get-Prop $answer 'result'
            if ($result -is [string]) { Write-Text $result } else { Write-Output (ConvertTo-CompactJson $result) }
        }
        if ((Get-Prop $answer 'success') -eq $false) {
            Write-Err "error: the tool '$name' ran and failed (code tool_failed)"
            exit 1
        }
    }
    'chat' {
        $answer, $text = Invoke-Api 'POST' '/chat' (Get-ChatBody $script:Positional[0])
        if ($script:JsonOut) { Write-Output $text } else { Write-Text ([string](Get-Prop $answer 'response')) }
    }
    'chat-stream' {
        Invoke-Stream '/chat/stream' (Get-ChatBody $script:Positional[0])
    }
    'session-create' {
        $body = [ordered]@{}
        if ($script:Title) { $body['title'] = $script:Title }
        if ($script:SystemPrompt) { $body['system_prompt'] = $script:SystemPrompt }
        $answer, $text = Invoke-Api 'POST' '/sessions' (ConvertTo-Json -InputObject $body -Compress)
        if ($script:JsonOut) { Write-Output $text } else { Write-Output (Get-Prop $answer 'session_id') }
    }
    'session-chat' {
        $id = Get-Segment $script:Positional[0]
        $answer, $text = Invoke-Api 'POST' "/sessions/$id/chat" (Get-ChatBody $script:Positional[1])
        if ($script:JsonOut) { Write-Output $text } else { Write-Text ([string](Get-Prop $answer 'response')) }
    }
    'session-chat-stream' {
        $id = Get-Segment $script:Positional[0]
        Invoke-Stream "/sessions/$id/chat/stream" (Get-ChatBody $script:Positional[1])
    }
    'session-messages' {
        $id = Get-Segment $script:Positional[0]
        $answer, $text = Invoke-Api 'GET' "/sessions/$id/messages$(Get-PageQuery)"
        if ($script:JsonOut) { Write-Output $text } else { Show-Messages $answer }
    }
    'session-list' {
        $answer, $text = Invoke-Api 'GET' "/sessions$(Get-PageQuery)"
        if ($script:JsonOut) { Write-Output $text } else { Show-Sessions $answer }
    }
    'session-delete' {
        $answer, $text = Invoke-Api 'DELETE' "/sessions/$(Get-Segment $script:Positional[0])"
        if ($script:JsonOut) { Write-Output $text } else { Write-Output "deleted session $($script:Positional[0])" }
    }
}
exit 0
