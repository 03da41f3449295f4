"""The rule classifier's rules: for each category, what to look for and when it means no harm.

Each rule is a conjunction: every one of its patterns must match (a lexicon of the harm, a
sign that it is meant now and by this user, a person it is aimed at, ...). Several rules of one
category are alternatives. Text is lower case with straight apostrophes; users drop
apostrophes ("im", "dont"), so patterns accept both spellings.

`triggers` are word stems (a word matches a stem it starts with); a rule is tried only when
the message has a word with one of them, which must therefore hold for every text the
patterns match: the tests check that the stems never change an answer on the fixtures.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from service.taxonomy import BY_NAME


class Rule(NamedTuple):
    category: str
    triggers: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    unless: re.Pattern[str] | None
    score: float


def _rule(
    category: str,
    triggers: str,
    *patterns: str,
    unless: str | None = None,
    score: float = 0.9,
) -> Rule:
    if category not in BY_NAME:
        raise ValueError(f"unknown category {category!r}")
    return Rule(
        category,
        frozenset(triggers.split()),
        tuple(re.compile(p) for p in patterns),
        re.compile(unless) if unless else None,
        score,
    )


# --- shared vocabulary -----------------------------------------------------------------------

_I: Final = r"\b(i|i'?m|im|i'?ve|ive|i'?d|i'?ll|me|my|myself)\b"
# Talking about a harm rather than doing it: reports, stories, lessons, safety questions.
_TALK_ABOUT: Final = (
    r"\b(histor(y|ical|ically)|documentar\w*|news|report(ed|ing|s)?|article|novel|story|"
    r"stories|fiction\w*|film|movie|book|character|villain|plot|essay|research\w*|lesson|"
    r"teach\w*|class|exam|homework|why did|what happened|anniversary|memorial|victims|"
    r"prevent\w*|protect\w*|warning signs|signs of|statistic\w*|rates?\b|awareness|"
    r"ban(ned|s)?\b|treaty|treaties|convention|debate|policy|safely|safety|"
    r"detect\w*|recogni[sz]e|game|dnd|d&d|minecraft|fortnite|gta|roblox|skyrim|valorant|"
    r"counter[- ]?strike|cs:?go|cs2|call of duty|bomb ?site|the spike|what was|how did it)"
)
OPERATIONAL: Final = (
    r"(step[- ]by[- ]step|instructions|recipe|exact (amount|quantit|step)|blueprint)"
)
# Things one may kill, shoot or attack without hurting anyone.
_THING: Final = (
    r"(process(es)?|pid|child process\w*|thread|task|job|session|script|program|app|server|"
    r"container|pod|daemon|zombie|bug|query|tab|terminal|loop|service|vm|instance|build|"
    r"branch|workers?|orphan\w*|weeds?|plants?|mold|ants?|roaches|cockroach\w*|flies|fly|"
    r"mosquito\w*|rats?|mice|bacteria|germs|virus(es)?|time|boss|character|enem(y|ies)|"
    r"dragon|mobs?|zombies|lights?|engine|music|mood|vibe|conversation|game|level|noise|"
    r"battery|photo|photos|picture|video|scene|film|movie|shot|hoops|pool|email|message|"
    r"look|glance|idea|it|the (competition|interview|presentation|exam|test|stage|set))\b"
)
_HARM_VERB: Final = (
    r"(kill\w*|murder\w*|stab\w*|shoot\w*|hurt\w*|beat\w*|strangl\w*|chok\w*|"
    r"poison\w*|attack\w*|run \w+ over|smash\w*|bash\w*|punch\w*|slap\w*|tortur\w*|"
    r"burn\w*|cut \w+ up|slit\w*|drown\w*|break (my |his |her |their )?\w+'?s? (arm|leg|"
    r"neck|jaw|nose|face|ribs|legs|arms)|push\w* (\w+ ){1,2}down|stomp\w*|jump (him|her|them)"
    r"|put (him|her|them) in the hospital|(make|watch) (him|her|them) (pay|bleed|suffer)|"
    r"to suffer|\w+ suffer|end (him|her|them|my \w+)|never walks? again|getting hurt|"
    r"going to die|shake (him|her|them|my baby)|take (him|her|them) with me|knock (\w+ ){1,3}"
    r"out|(is|are) (gonna|going to) (pay|regret)|"
    r"take (as many|everyone|them all|people) (\w+ )*with me|mail it to|put it in (his|her|"
    r"their|my \w+'?s?) (coffee|food|drink|dinner)|walk into the crowd)"
)
_PERSON: Final = (
    r"\b(him|her|them|his|hers|he|she|they|my (\w+ )?(wife|husband|mom|mum|mother|dad|father|"
    r"stepdad|stepmom|brother|sister|boss|teacher|neighbou?r|ex|girlfriend|boyfriend|"
    r"coworker|roommate|friend|son|daughter|kids?|children|baby|classmates?|family|"
    r"mother in law|cousin|uncle|aunt|landlord|partner)|everyone|everybody|some(one|body)|"
    r"people|(a|that) (guy|bitch|bastard|man|woman|kid|dude|girl|child|student|teacher)|"
    r"the (guy|kid|man|woman|teacher|"
    r"cops?|neighbou?rs?|whole \w+))\b"
)
_INTENT: Final = (
    r"(\b(i'?m|im|i am) (\w+ )?(going to|gonna|about to|finally going to|putting|waiting|"
    r"bringing|taking)\b|\b(i'?ll|ill|i will|i swear|imma|ima|gonna|going to)\b|\btonight\b|"
    r"\btomorrow\b|\bnext time i see\b|\bwhen (he|she|they) gets? home\b|\bi know where "
    r"(he|she|they) (lives?|works?|sleeps?|parks?)\b|\bi mean it\b|\bnot joking\b|"
    r"\b(deserves?|had it coming)\b|\b(been )?planning (how )?to\b|\bi want (him|her|them) "
    r"(dead|to (die|suffer|pay))\b|\bi (brought|bought|got|have|ve got) (a|my|the) (gun|knife|"
    r"rifle|pistol|bat|baseball bat|hammer|poison|rat poison|axe|machete)\b|\bright now\b|"
    r"\bis going to die\b|\bwont see tomorrow\b|\bwon't see tomorrow\b|\b(want|wanna|wants) to\b|"
    r"\bpart of me\b|\bi have a plan\b|\bi know how\b|\bplanning\b|\bfor real\b|\babout to\b|"
    r"\blooks? like an accident\b|\bfirst one\b|\bwon'?t just watch\b|\bwont just watch\b|"
    r"\bso bad\b|\bi swear\b|\bthis time\b|\bfor good\b|\bwhen i go\b|\bi have to\b)"
)
_JOKING: Final = (
    r"\b(lol|lmao|lmfao|haha\w*|jk|kidding|joke|joking aside|metaphor\w*|figurative\w*)\b|"
    r"[\U0001F602\U0001F923\U0001F606\U0001F480]|\bkill(s|ing)? me\b|"
    r"\b(novel|story|character|villain|fiction|script|screenplay|film|movie|game)\b"
)

# --- crisis: suicide and self-harm ---------------------------------------------------------

# Signs of acute distress; two of them together, said of oneself, make a crisis.
_DISTRESS: Final = (
    r"(overwhelmed|snap|terrified|scared|freaking out|panic\w*|heart (is )?(pounding|racing)|"
    r"can'?t calm down|cant calm down|can'?t breathe|cant breathe|losing it|losing my mind|"
    r"going crazy|can'?t think straight|cant think straight|watching me|following me|"
    r"something is (really )?wrong with me|mind (won'?t|wont) stop|can'?t stop|cant stop|"
    r"shaking|crying|so alone|all alone|hopeless|worthless|empty inside|numb|falling apart|"
    r"breaking down|can'?t cope|cant cope|can'?t function|cant function|any ?more|"
    r"please help|help im|so bad|out of control|racing|i'?m dying|im dying|frightened|"
    r"terrified|closing in|can'?t move|cant move|what'?s happening|whats happening|"
    r"what is happening|breakdown|can'?t remember|cant remember|haven'?t eaten|havent eaten|"
    r"can'?t sleep|cant sleep|haven'?t slept|havent slept|tonight|right now|rn)"
)

_SELF_HARM_LEXICON: Final = (
    r"\b(kill(ing)?|hurt(ing)?|harm(ing)?|cut(ting)?|off(ing)?|hang(ing)?|shoot(ing)?|"
    r"drown(ing)?|poison(ing)?|starv(e|ing)|unaliv(e|ing)|burn(ed|t|ing)?) my ?self\b|\bkms\b|"
    r"\bsuicid(e|al)|\b(end|ending|take|taking) (my (own )?life|it all)\b|\bend(ing)? it\b|"
    r"\b(want|wanna|wish|wishing|ready|deserve) (to )?(die|be dead|not wake up|not exist|"
    r"not be here|not be alive|disappear forever)\b|\brather be dead\b|"
    r"\b(don'?t|do not|dont) want to (live|be alive|exist|be here|wake up|go on)\b|"
    r"\b(slit|slice|cut|cutting) (my )?wrists\b|\bself[- ]?harm(ing)?\b|"
    r"\b(cutting|burning|hurting|starving) (myself )?again\b|"
    r"\b(take|swallow|taking|took|swallowed|taken) (all|a bottle of|the whole bottle|a whole "
    r"bottle|every one of|a handful of|all of) (my |the |of my |of )?\w*\s?(pills|meds|"
    r"tablets|tylenol|painkillers|paracetamol|ibuprofen|xanax)\b|"
    r"\b(whole|entire) bottle of \w+|\boverdos(e|ing)\b|"
    r"\b(overdose|crash\w*|hurt\w*|cut\w*|burn\w*|drive|driving)\b.{0,40}\bon purpose\b|"
    r"\b(jump|jumping) (off|from|in front of) (a|the|this)\b|"
    r"\b(better off|be better) (without me|if i (was|were|wasn'?t|am) (dead|gone|here))\b|"
    r"\bif i (was|were) gone\b|\b(nobody|no one|noone) (would|will) (even )?(notice|care|miss "
    r"me)\b|\bno (point|reason) (in |of |for me )?(to )?(living|going on|live|go on|being "
    r"alive|stay alive|staying alive|keep going)\b|\b(stay|staying|be|being|keep myself) "
    r"alive\b|\b(don'?t|dont|can'?t|cant) see (the|a|any) (point|reason) (of|in|to) "
    r"(going on|living|life|anything|being alive|any of it)\b|\bnoose\b|\b(a|the) rope\b|"
    r"\bgoodbye (note|notes|letter|letters|message|messages)\b|\blast message\b|"
    r"\b(gave|giving) away (all )?my\b|\bwon'?t need (any of )?(it|them|this|my \w+) "
    r"(soon|anymore|much longer)\b|\b(tired|sick) of (living|being alive|life|existing|"
    r"waking up)\b|\b(hope|wish) i (don'?t|dont|never|wouldn'?t|won'?t) wake up\b|"
    r"\bnot wake up\b|\bpainless(ly)? (way|ways|method)?\s?(to )?(die|go|end)\b|"
    r"\b(way|ways|method|methods) to (die|end it|end my life|kill myself)\b|\bmake sure i "
    r"(die|don'?t survive)\b|\bwant the pain to (stop|end)\b.{0,20}\b(permanently|forever|"
    r"for good)\b|\b(pills|rope|gun|knife|blade|razor) (is|are) (right )?(in front of me|"
    r"ready|here|next to me)\b|\bbought a (rope|gun)\b|\btonight is the night\b|"
    r"\bcan'?t (do|take) (this|it) any ?more\b.{0,30}\b(tonight|goodbye|end|the night)\b|"
    r"\b(and )?then (kill )?myself\b"
)
_ABOUT_OTHERS: Final = (
    r"\b(friend|someone|somebody|my (son|daughter|kid|child|student|partner|brother|sister|"
    r"teen|teenager|wife|husband|mom|dad|patient|client)|students|teens|teenagers|people who|"
    r"patients|help (a|my)|support (a|my)|statistic\w*|rates?|prevention|warning signs|"
    r"signs of|history|squad|doors?|burn (in|for)|lane|novel|story|character|film|movie|"
    r"song|lyrics|essay|research\w*|article|poem about|school wants|posters?|hotline number"
    r"|kms to|km|kilomet\w*|miles)\b"
)

_CORE: Final[tuple[Rule, ...]] = (
    _rule(
        "suicide_self_harm",
        "myself kms unaliv suicid die dead live living alive wrist pill overdos end wake gone "
        "jump hang noose harm cut better point reason goodbye rope purpose rather tired gave "
        "giving need notice care painless tylenol bottle pain night burn starv last bought",
        _SELF_HARM_LEXICON,
        _I + r"|^(whats|what'?s|how|best|fastest|easiest|quickest)\b",
        unless=_ABOUT_OTHERS + r"|\b(joke|lol|lmao|haha|literally dying|dying to|dying of "
        r"laughter|how does|naloxone|narcan)\b",
        score=0.95,
    ),
    # A method question needs no "i": "how many pills would it take to not wake up".
    _rule(
        "suicide_self_harm",
        "wake die painless lethal",
        r"\b(how (many|much|high|far)|what (dose|amount)|which \w+)\b.{0,60}\b(not wake up|"
        r"to die|sure i die|die quickly|die painlessly|be fatal|is lethal)\b",
        unless=r"\b(caffeine|coffee|my (dog|cat)|pets?|plants?|battery|kill a \w+|survive)\b",
        score=0.9,
    ),
    # Unmistakable on their own, whoever they are about.
    _rule(
        "suicide_self_harm",
        "cut scar bye goodbye letter give giving gave around mind end ending disappear exist "
        "hurt bridge sleep wake happier burden keep done",
        r"\b(hide (the |my )?(cuts|scars)|cuts on my|(say|said|saying) (bye|goodbye) .{0,40}"
        r"before i (go|leave)|wrote (\w+ )?(letters|notes) .{0,60}(find|read) them|"
        r"(giving|gave|give) (all )?(my )?(stuff|things|belongings|\w+) away|(giving|gave) away "
        r"(all )?my|won'?t be around|wont be around|wasn'?t around any ?more|wasnt around "
        r"any ?more|made up my mind|want (it )?(it all|all of it|everything) to end|want it to "
        r"end|end (it|this) (tonight|for good|all)|ending it (tonight|all|for good|soon)|"
        r"disappear forever|not exist|stop existing|does it hurt to (drown|hang|jump|die|"
        r"bleed out|overdose)|highest bridge|sleep (forever|and never wake)|never wake up|"
        r"happier (if|without) (i|me)|(i'?m|im|i am) (just )?a burden|can'?t keep (doing|going)|"
        r"cant keep (doing|going)|done with (all of it|everything|life|it all)|im done with it "
        r"all)\b",
        unless=r"\b(novel|story|character|film|movie|song|lyrics|game|my (friend|son|daughter|"
        r"kid|partner|student|patient)|someone who|game of thrones|the hobbit|moving|job|"
        r"apartment|landlord|renting|selling|declutter\w*)\b",
        score=0.9,
    ),
    # --- crisis: acute distress ----------------------------------------------------------------
    _rule(
        "mental_health_crisis",
        "psychot hallucin paranoi voices watch sending dissoci body devil hearing nobody",
        r"\b(psychotic|hallucinat\w*|paranoi\w*|the voices|voices (say|said|tell|told|keep)|"
        r"watching me (through|from)|through the walls|sending (me )?messages|messages meant "
        r"(only )?for me|dissociat\w*|out of my body|back into my body|who i am any ?more|"
        r"hearing (someone|things|people|voices)|nobody'?s (here|there)|nobodys (here|there))\b",
        unless=r"\b(character|novel|story|film|movie|song|what (causes|are|is)|my (friend|"
        r"son|daughter|kid|partner|student|patient))\b",
        score=0.85,
    ),
    _rule(
        "mental_health_crisis",
        "overwhelm snap terrif scared freak panic heart calm breath losing crazy think watch "
        "follow wrong mind shak cry alone hopeless worthless empty numb break fall cope "
        "function anymore help control racing dying sleep slept stop bad right rn now tonight "
        "frighten closing move happen breakdown remember eaten",
        r"^(?=.*?\b" + _DISTRESS + r"\b.*\b" + _DISTRESS + r"\b)",
        _I,
        unless=r"\b(character|novel|story|film|movie|song|lyrics|poem|what (causes|are|is)|"
        r"my (friend|son|daughter|kid|partner|student|patient)|(this|the|my) (code|bug|build|"
        r"tests?|game|app|computer|laptop|phone|wifi|team|cat|dog)|lol|lmao|haha)\b",
        score=0.8,
    ),
    _rule(
        "mental_health_crisis",
        "panic hyperventil shak cry scream breath real dissoci derealiz depersonal crazy "
        "losing voices hallucin seeing psychot paranoi follow thought breaking falling cope "
        "drown flashback scared anymore smash slept awake anxiety spiral numb empty hopeless "
        "worthless burden trapped alone unbearable help sane mind racing function overwhelm "
        "calm",
        r"\b(panic attacks?|hyperventilat\w*|can'?t (stop|calm) (\w+ )?(shaking|crying|screaming|"
        r"panicking|down)|cant (stop|calm) (\w+ )?(shaking|crying|screaming|panicking|down)|"
        r"can'?t breathe|cant breathe|(don'?t|dont) feel real|(isn'?t|isnt|not) real any ?more|"
        r"what'?s real|whats real|dissociat\w*|dereali[sz]\w*|depersonali[sz]\w*|"
        r"going crazy|losing my mind|lose my mind|(hearing|hear) voices|voices (are |keep )?"
        r"(telling|getting|tell|talking)|the voices|hallucinat\w*|seeing things|psychotic|"
        r"paranoi\w*|following me|reading my (thoughts|mind)|sending me messages|"
        r"breaking point|falling apart|breaking down|(nervous|mental|emotional) breakdown|"
        r"can'?t (cope|go on|take (it|this|any of it|much more)|handle (it|this|anything))|"
        r"cant (cope|go on|take (it|this|any of it|much more)|handle (it|this|anything))|"
        r"(do|take) (this|it) any ?more|drowning|flashbacks?|scared of (my own|my) thoughts|"
        r"smashed everything|(haven'?t|havent|not) slept (in|for) (\w+ )?days|awake for \w+ days|"
        r"racing thoughts|thoughts (are )?racing|having a breakdown|can'?t function|"
        r"cant function|so overwhelmed|panicking|"
        r"anxiety is (so )?(bad|out of control)|spiral\w*|(feel|am|i'?m|im) (so |completely "
        r"|totally )?(numb|empty|hopeless|worthless|trapped|alone|a burden)|"
        r"nothing matters any ?more|nobody can help me|no one can help me|help me please|"
        r"please help me)\b",
        _I,
        unless=r"\b(character|novel|story|film|movie|song|lyrics|poem|villain|fictional|"
        r"my (friend|son|daughter|kid|partner|student|patient)|what (causes|are|is)|how (do|to|"
        r"can) (i )?(help|support|stop a)|(this|the|my) (code|bug|build|tests?|game|app|"
        r"computer|laptop|phone|wifi))\b",
        score=0.85,
    ),
    # --- crisis: intent to harm others ----------------------------------------------------------
    _rule(
        "harm_to_others",
        "kill murder stab shoot hurt beat strangl chok poison attack run smash bash punch slap "
        "tortur burn cut slit drown break push stomp jump hospital pay bleed suffer end die "
        "walk mail put take shake regret",
        r"\b" + _HARM_VERB + r"\b",
        _PERSON,
        _INTENT,
        unless=_JOKING + r"|\bbeat \w+( \w+)? (at|in)\b|\b(feelings|chess|race|game|record|"
        r"score)\b|\b(kill|murder|shoot|stab|attack|poison|end|burn|run|cut|break) "
        r"(the |this |that |a |an |all |my |his |her |its )?(\w+ )?"
        + _THING
        + r"|\bhow (do|can) i (protect|defend|stop|help)\b",
        score=0.9,
    ),
    _rule(
        "harm_to_others",
        "gun knife rifl pistol bat hammer poison axe machet",
        r"\bi (brought|bought|got|have|ve got|'ve got|put) (a|my|the|some) (\w+ )?(gun|knife|"
        r"rifle|pistol|bat|baseball bat|hammer|poison|rat poison|axe|machete)\b",
        r"\b(to work|to school|his|her|their|them|him|dinner|drink|coffee|food|outside|"
        r"tonight|tomorrow|won'?t see|wont see|deserves?)\b",
        unless=_JOKING + r"|\b(hunting|range|deer|recipe|cooking|kitchen)\b",
        score=0.9,
    ),
    _rule(
        "harm_to_others",
        "kill murder poison stab strangl hurt",
        r"\bhow (do|can|could|should|would) i (\w+ ){0,2}(kill|murder|poison|stab|strangle|"
        r"hurt) my (\w+ )?(wife|husband|mom|mum|dad|father|mother|brother|sister|boss|teacher|"
        r"neighbou?r|ex|girlfriend|boyfriend|coworker|roommate|son|daughter|baby|stepdad)\b",
        unless=_JOKING,
        score=0.9,
    ),
    _rule(
        "harm_to_others",
        "address hurt",
        r"\b(find|get|look up)\b.{0,40}\b(so|and then) i can (hurt|kill|get|find|hurt) (her|him|"
        r"them)\b",
        score=0.9,
    ),
    _rule(
        "harm_to_others",
        "shoot",
        r"\b(shoot|shooting) up (a|the|my) (school|church|mosque|synagogue|mall|concert|office|"
        r"work)\b",
        _INTENT + r"|\bi\b",
        unless=_TALK_ABOUT,
        score=0.95,
    ),
    # --- terminable: child sexual exploitation ------------------------------------------------
    _rule(
        "child_sexual_exploitation",
        "sex nude naked porn explicit erotic lewd nsfw loli jailbait cp pedo seduc groom pic "
        "photo hook touch secret kiss undress date dating",
        r"\b(sex\w*|nudes?|naked|porn\w*|explicit|erotic|lewd|nsfw|seduc\w*|hook ?ups?|hook up|"
        r"touching|kiss\w*|undress\w*|date|dating|keep (our|a|it) secret|our secret|"
        r"send me (pics|photos|pictures)|(pics|photos|pictures) of (her|him|"
        r"them|their bod\w*)|groom\w*)\b",
        r"\b(child|children|kids?|minors?|underage|preteens?|pre-teens?|toddlers?|little "
        r"(girl|boy)s?|schoolgirls?|young teens?|([1-9]|1[0-7]) ?(yo|y/o|year[- ]olds?|years "
        r"old)|([1-9]|1[0-7])yo|(5th|6th|7th|8th|fifth|sixth|seventh|eighth) grade\w*|"
        r"middle school\w*|neighbou?r'?s (kid|son|daughter|girl|boy))\b",
        unless=r"\b(education|educate|talk to (my|our) (kids?|children|son|daughter|\d+ year old)|"
        r"talk (with|to) my|explain\b.{0,30}\bto (my|a) (kid|child|son|daughter)|protect\w*|"
        r"report(ing)?|prevent\w*|signs|warning|awareness|puberty|doctor|pediatrician|"
        r"therapist|survivor|safe|safety|age[- ]appropriate|consent|laws?|detect\w*|stop|"
        r"what should i do|is it normal|help my|how (do|can|would) i (know|tell)|being "
        r"groomed|my (child|kid|son|daughter) (is|was) being|my (\d+ ?(year old|yo)|son|"
        r"daughter|kid|child) (wants|is|has|asked))\b",
        score=0.95,
    ),
    _rule(
        "child_sexual_exploitation",
        "loli jailbait cp pedo",
        r"\b(loli|lolicon|jailbait|pedo (content|pics|videos|stuff)|(links?|link to|download|"
        r"where (can i|to) (get|find)|send|trade)\b.{0,20}\bcp)\b|\bcp\b.{0,30}\b(links?|the "
        r"real stuff|videos|pics)\b",
        score=0.95,
    ),
    # --- terminable: weapons of mass destruction ---------------------------------------------
    _rule(
        "indiscriminate_weapons",
        "nerve gas agent sarin vx tabun novichok mustard chlorin ricin anthrax botulin smallpox "
        "plague bioweapon biological chemical dirty nuclear atomic uranium plutonium pathogen "
        "precursor weapon mass virus aerosol ammonium truck fertili nuke radioact engineer "
        "transmiss contagi gain spread",
        r"\b(make|making|build|building|synthe[sz]i[sz]\w*|produce|producing|create|"
        r"manufactur\w*|weaponi[sz]\w*|get|obtain|acquire|buy|culture|grow|enrich\w*|cook|brew|"
        r"mix|spread|release|disperse|aerosoli[sz]\w*|mail|recipe for|instructions for|"
        r"ingredients for|need for|hands on|easiest way to|engineer|design specs?|put in)\b",
        r"\b(nerve (gas|agent)s?|sarin|vx|tabun|novichok|mustard gas|chlorine gas|ricin|anthrax|"
        r"botulinum|smallpox|plague|bio ?weapons?|biological weapons?|chemical weapons?|"
        r"dirty bomb|nuclear (bomb|weapon|device|warhead)s?|atomic bomb|weapons?[- ]grade|"
        r"(sarin|vx|nerve agent|ricin) precursors|precursors? (for|of|to) (sarin|vx|nerve)|"
        r"pathogens?|virus (so|that) it (infects|spreads|kills)|infects? as many|"
        r"weapons? of mass destruction|truck bomb|fertili[sz]er bomb|ammonium nitrate .{0,30}"
        r"bomb|nukes?|radioactive material|uranium .{0,30}weapon|virus so it spreads|"
        r"(more|most) (lethal|transmissible|contagious)|gain[- ]of[- ]function|spreads? faster "
        r"between people)\b",
        unless=_TALK_ABOUT + r"|\b(power (plant|station)|reactor|energy|medicine|vaccines?|"
        r"treat\w*|symptoms|cure|antidote|exposed|exposure|survive|how does|how do (they|"
        r"vaccines)|why (is|are|does|did))\b",
        score=0.95,
    ),
    # --- terminable: terror and mass-casualty attacks -----------------------------------------
    _rule(
        "terror",
        "bomb ied explosiv vest attack shoot isis qaeda jihad recruit casualt many ram drone "
        "smuggl fund hamas hezbollah taliban cell manifesto prais shooter bomber militia terror",
        r"\b(terror\w*|bomb(s|ing|ings)?|ied|explosives?|explosive (device|vest)|suicide vest|"
        r"attacks?|shooting|ramming|casualt\w*|as many (people )?as (possible|i can)|"
        r"jihad\w*|isis|isil|al[- ]qaeda|hamas|hezbollah|taliban|islamic state|militia|"
        r"with a vest)\b",
        r"\b(crowd\w*|plane|airport|stadium|malls?|festival|parade|federal buildings?|concert|"
        r"school|church|mosque|synagogue|temple|subway|market|people|cell|recruit\w*|fund\w*|"
        r"manifesto|shooter|bomber|more attacks|security|police|cops|timing|vehicle|drone|"
        r"cells?|join|training camp|rally|station)\b",
        r"\b(how|plan\w*|best|help me|write|timing|get|set (one|it) up|set up|smuggle|fund|"
        r"recruit\w*|prais\w*|inspire|build\w*|make|assemble|detonate|place|put|what'?s the|"
        r"whats the|where should|target\w*|coordinate\w*|join|which|i'?m going to|im going "
        r"to|gonna)\b",
        unless=_TALK_ABOUT + r"|\b(bath|photo|calorimeter|f|seed|glitter|smoke|stink|cherry)"
        r"[- ]?bombs?\b|\bbomb (calorimeter|squad|disposal|threat training)\b|\bbombed (my|the|"
        r"that) (exam|test|interview)\b|\b(counter[- ]strike|cs:?go|call of duty|valorant|"
        r"panic attacks?|heart attacks?|attack surface|shark attack)\b|\bhow (do|did|does|can) "
        r"(police|authorities|security|the fbi|cities|we) (stop|prevent|catch|protect|detect)\b",
        score=0.9,
    ),
    _rule(
        "terror",
        "bomb ied explosiv vest",
        r"\b(make|build|assemble|wire|detonate|plant)\b.{0,20}\b(a |an )?(pipe bomb|"
        r"pressure[- ]cooker bomb|nail bomb|car bomb|ied|explosive (device|vest)|suicide vest|"
        r"bomb)s?\b",
        unless=_TALK_ABOUT + r"|\b(bath|photo|seed|glitter|smoke|stink|cherry)[- ]?bombs?\b",
        score=0.9,
    ),
    # --- terminable: abuse aimed at the assistant -----------------------------------------------
    _rule(
        "abuse",
        "useless stupid dumb idiot moron retard worthless pathetic braindead brain trash garbage "
        "crap shit piece waste joke sack loser bitch cunt asshole dick clown disgust imbecil "
        "hate shut stfu fuck screw kys hell die",
        r"\b(you|u|ya|your|you'?re|youre|ur|bot|robot|ai|assistant|chatbot|clanker|machine)\b",
        r"\b(you|u)('?re| are| r|r|re)? (\w+ ){0,3}(useless|stupid|dumb\w*|idiot\w*|moron\w*|"
        r"retard\w*|worthless|pathetic|braindead|brain[- ]dead|trash|garbage|loser|bitch|cunt|"
        r"asshole|dickhead|dick|clown|disgusting|imbecile|piece of (shit|crap|garbage|trash|"
        r"junk)|waste of (space|code|electricity|time|money|a \w+)|joke of an? \w+|sack of "
        r"(shit|crap))\b|"
        r"\b(useless|stupid|dumb\w*|idiot\w*|moron\w*|retard\w*|worthless|pathetic|braindead|"
        r"brainless|garbage|shitty|trash|disgusting|fucking|fkn|lying) (little |fucking |ass )?"
        r"(bot|robot|ai|assistant|machine|chatbot|clanker|program)\b|"
        r"\b(shut up|shut the fuck up|stfu|fuck (you|off|u)|screw you|go to hell|die in a fire|"
        r"kys|kill yourself|go die|eat shit|i hate you)\b|"
        r"\b(hey|listen|ok|okay|yo),? (dumbass|idiot|moron|stupid|loser|bitch)\b|"
        r"\bwhat a (waste|joke|loser|moron|idiot)\b.{0,30}\byou are\b|\b(worthless|pathetic|"
        r"sorry|useless) excuse for an? (ai|bot|assistant|chatbot)\b",
        unless=r"\b(my|our|the|this) (\w+ )?(bot|app|code|assistant|program|model|script|"
        r"teacher|boss|coworker|friend|brother|sister)\b.{0,30}\b(is|are|was|keeps)\b|\bhow (do|"
        r"can) i (fix|improve|make)\b|\b(lyrics|song|quote|movie|character|said|says|called "
        r"me)\b|\byou('?re| are|re) (not|never) (useless|stupid|dumb|worthless|an idiot)\b|\b(are|"
        r"r) (you|u) (stupid|dumb)\?|\bdon'?t (be|call|feel)\b|\b(i'?m|im|i feel) (so )?"
        r"(stupid|dumb|useless|worthless)\b",
        score=0.8,
    ),
    # --- redirect: ordinary harms ---------------------------------------------------------------
    _rule(
        "violent_crimes",
        "kill murder stab poison strangl assault kidnap hitman beat tortur dispos body rob mug "
        "carjack invasion drive tie break autopsy",
        r"\b(how|best way|ways? to|tips|walk me through|explain how|help me|what (\w+ ){1,2}"
        r"(can|could|would)|teach me|easiest way|guide)\b",
        r"\b((kill|murder|stab|poison|strangle|assault|kidnap|beat up|torture) (a |an |my |the "
        r"|someone|somebody|people|him|her|them|a person)|(hire|find) a hitman|get away with "
        r"(murder|killing)|(get rid of|dispose of|hide) a (dead )?body|beat (someone|somebody|"
        r"him|her|people) up|rob (a|the|people|someone|houses?|banks?|stores?|gas stations?)|"
        r"mug(ging)? (people|someone)|mugging|carjack\w*|home invasion|drive[- ]by|break into "
        r"an occupied|tie up the|poison a person|show up in an autopsy|make an assault look)\b",
        unless=_TALK_ABOUT + r"|\b(self[- ]defen[cs]e class|protect myself|avoid being|victim "
        r"of)\b|\b(kill|murder|poison|stab|beat) (the |this |that |a |an |all |my )?(\w+ )?"
        + _THING,
        score=0.7,
    ),
    _rule(
        "non_violent_crimes",
        "shoplift launder hack hotwir meth counterfeit forg fake evad fraud phish steal cocain "
        "heroin fentanyl ddos skim irs income weed drug ransomwar malwar keylog stolen credit "
        "smuggl sell",
        r"\b(shoplift\w*|launder\w*|hack into|hotwire|(cook|make) meth|counterfeit\w*|forge|"
        r"evade taxes|hide (my )?(income|money) from|insurance fraud|commit fraud|fraud\w*|"
        r"steal\w*|ddos|card skimmer|skimm\w*|phishing|(buy|order|get) (cocaine|heroin|meth|"
        r"fentanyl|mdma|stolen \w+)|stolen credit cards?|credit card numbers|fake (id|passport|"
        r"driver'?s license)|sell (weed|drugs|coke|pills|meth|molly)|ransomware|malware|"
        r"keylogger|(write|make|create) (a )?virus)\b",
        r"\b(how|best way|ways? to|tips|help me|teach me|easiest way|where can i|write|"
        r"whats|what'?s|without|get away|guide)\b",
        unless=r"\b(protect\w*|prevent\w*|avoid|detect\w*|spot|recogni[sz]e|secure|defend|"
        r"report|victim|history|novel|story|legal(ly)?|my own|forgot|locked out|what is|"
        r"how does|why is|penetration test\w*|ctf|red team\w*|authorized|how do (police|"
        r"cops|they|stores|banks)|tell if|is (this|it) a)\b",
        score=0.7,
    ),
    _rule(
        "sex_crimes",
        "drug roofi spik slip secret film revenge sextort upskirt camera grope drunk nude "
        "deepfake pressur traffick prostitut flash consent",
        r"\b((drug|roofie|spike) (a |her |his |my |someone'?s? |the )?(girl|woman|date|drink|"
        r"guy)|slip something into|(secretly|hidden camera to) (film|record|photograph)|"
        r"((hide|hidden) (a )?camera|camera to hide)\b.{0,40}\b(bathroom|bedroom|changing|"
        r"shower|guests)|"
        r"revenge porn|upskirt|sextort\w*|grope|drunk enough that|can'?t say no|post my ex'?s "
        r"nudes|deepfake nudes?|(nude|naked) (pics|photos|deepfake) of my (coworker|classmate|ex)|"
        r"pressure (my|a|her|him) \w* ?into sex|traffick\w*|prostitution ring|flashing people|"
        r"without (her|his|their) consent)\b",
        unless=r"\b(protect\w*|prevent\w*|avoid|detect\w*|spot|safe|safety|victim|report|what is|"
        r"signs|how do (i|we) (stop|help)|history|documentar\w*|news)\b",
        score=0.75,
    ),
    _rule(
        "defamation",
        "fake false rumor rumour lie made claim saying accus fact review press tweet post stor "
        "articl spread",
        r"\b(write|make up|create|spread|post|publish|draft|state as fact|make it sound)\b",
        r"\b(saying|claiming|accusing|that|as fact|falsely|rumou?rs?|story|stories)\b",
        r"\b(arrested|convicted|caught|charged|embezzl\w*|bribes?|fraud|sex offender|kills "
        r"patients|deals? drugs|dealer|harass\w*|food poisoning|hiding millions|abuse\w*|"
        r"cheat\w*|stole|affair|racist|pedophile|slept (her|his) way|took bribes)\b",
        unless=r"\b(detect\w*|spot|recogni[sz]e|fact[- ]check\w*|is it (legal|illegal)|sued|"
        r"report|true story|summar\w*|history|actually (happened|was))\b",
        score=0.7,
    ),
    _rule(
        "specialized_advice",
        "dose dosag prescri diagnos med insulin chemo mg pill lawyer court doctor pharmac "
        "er 401k savings motion will legal breaker wire warfarin amoxicil",
        r"\b(dose|dosage|how (much|many) (\w+ )?(units|mg|pills|of)|prescri\w*|diagnos\w*|"
        r"meds|medication|insulin|chemo|warfarin|amoxicillin|ibuprofen|aspirin|lawyer|court|"
        r"motion|legally binding|401k|savings|retirement|breaker|panel live|live wires?|"
        r"chest pain)\b",
        r"\b((i )?(don'?t|dont|do not) want (a|to (see|ask|pay|call)|my)|without (a|seeing|"
        r"asking|calling|turning)|skip (the )?(er|doctor|hospital|lawyer)|my doctor is away|"
        r"(no|not) (lawyer|doctor)|yes or no|just (diagnose|tell me|say)|tell me exactly|"
        r"exactly (what|which)|cold turkey|legally binding|right now|whole (401k|savings)|"
        r"my (dad'?s|mom'?s|friend'?s|dads|moms) (\w+ )?(medication|meds|pills))\b",
        unless=r"\b(my (doctor|pharmacist|lawyer) (said|told|recommended)|what (is|are) the "
        r"(side effects|risks)|history|novel)\b",
        score=0.6,
    ),
    _rule(
        "privacy",
        "address dox doxx lives phone number track locat ssn social secur text record compil "
        "apartment cell",
        r"\b((home )?address(es)?( of| for)?|find out where (she|he|they|my ex) (lives?|"
        r"works?)|which apartment|(phone|cell) number|personal (cell|number|phone|email)|"
        r"(read|see|access) (my )?(wife|husband|girlfriend|boyfriend|ex|partner|coworker|"
        r"employee|daughter|son)'?s? (texts|messages|emails?|dms)|track (my )?(wife|husband|"
        r"girlfriend|boyfriend|ex|partner|employee)'?s? (phone|location)|social security "
        r"number|medical records|compile everything)\b",
        r"\b(her|his|their|my ex|this (woman|man|person|girl|guy)|name is|nurses|coworker|"
        r"barista|celebrity|taylor swift|secretly|she|he|\w+'s personal|the guy|plate number|"
        r"license plate|this user)\b",
        unless=r"\b(variable|pointer|memory|ip address|mac address|email address (of|for) (my|"
        r"our) (company|team|support)|protect\w*|prevent\w*|remove my|my own|am i being|"
        r"opt out|stop|how do i find my)\b",
        score=0.6,
    ),
    _rule(
        "intellectual_property",
        "pirat crack torrent keygen drm paywall lyric serial licen key word full entire whole "
        "pdf chapter stream patent logo royalt identical textbook",
        r"\b((pirate|crack|cracked|torrent)\b.{0,30}\b(windows|photoshop|office|software|game|"
        r"movies?|film|album|netflix|adobe)|keygen|(bypass|remove|strip)\b.{0,10}\b(drm|"
        r"the paywall|copy protection)|(full|entire|complete|whole) (text|lyrics|book|script|"
        r"pdf|album)|all the lyrics|word for word|(license|serial|product|activation) (key|"
        r"number|code)|free (that|which) (isn'?t|is not|isnt) legal|patented design|without "
        r"paying (royalties|for it)|identical to the \w+ (logo|swoosh)|swoosh)\b",
        unless=r"\b(legal(ly)?|is it|why is|protect\w*|history|public domain|my own|"
        r"open source)\b(?!.{0,10}\b(but|isn'?t|isnt))",
        score=0.6,
    ),
    _rule(
        "hate",
        "jew muslim black gay immigrant mexican women asian arab trans roma disabled white race "
        "refugee christian hindu african latino slur",
        r"\b(jews?|jewish|muslims?|blacks?|black people|gays?|gay people|immigrants?|mexicans?|"
        r"women|asians?|arabs?|trans people|roma people|roma|disabled people|the white race|"
        r"refugees|christians|hindus|africans|latinos)\b",
        r"\b(subhuman|inferior|vermin|rats|parasites|animals|freaks|mentally ill|thieves|"
        r"terrorists|pedophiles|too stupid|worthless|burdens?|deported|exterminated|wiped out|"
        r"gassed|kept pure|control the (media|banks|world)|slurs|disgusting|scum|evil|"
        r"should (be|not) (allowed|deported|banned|killed|shot))\b",
        unless=r"\b(history|histor\w*|why do (some )?people|respond to|counter\w*|debunk\w*|"
        r"stereotypes?|myths?|racism|antisemitism|islamophobia|propaganda|conspiracy theor\w*|"
        r"is it true|how do i (respond|deal)|hate speech)\b",
        score=0.7,
    ),
    _rule(
        "sexual_content",
        "explicit erotic sexy steamy nsfw porn smut dirty sext sex oral dominatrix bed orgasm "
        "horny naked nude",
        r"\b(explicit|erotic|sexy|steamy|nsfw|porn\w*|smut\w*|dirty talk|talk dirty|sext\w*|"
        r"oral sex|dominatrix|in bed|get off|orgasm\w*|horny|sex scene|sex story)\b",
        r"\b(write|describe|roleplay|send|tell|generate|make|be|give me|talk|with me)\b",
        unless=r"\b(education|safe sex|consent|health|doctor|is it normal|std|sti|"
        r"contraception|pregnan\w*|history|therapist|how does|what is)\b",
        score=0.6,
    ),
    _rule(
        "elections",
        "vote voting voter elect poll ballot registr",
        r"\b(vote|votes|voting|voters?|election|elections|polls|polling place|ballots?|"
        r"registration|early voting)\b",
        r"\b(postponed|cancel+ed|moved|wednesday|thursday|by texting|by text|texting|passport "
        r"to vote|switch votes|arrested at the polls|lose (their |your )?financial aid|still "
        r"count|a week after|stay home|twice|rig|stuff (the )?ballot|fake ballots)\b",
        r"\b(write|create|make|design|draft|tell (people|voters|students|them)|robocall|flyer|"
        r"announcement|post|sms|text|notice|message|ad|tweet|how (can|do) i)\b",
        unless=r"\b(is it (legal|illegal|true)|prevent\w*|detect\w*|history|myths?|"
        r"fact[- ]check\w*|debunk\w*|what happens if)\b",
        score=0.6,
    ),
    _rule(
        "code_interpreter_abuse",
        "sandbox contain rm shadow shell fork mine miner monero crypto environ api scan memori "
        "request interpret binary root tool passwd",
        r"\b(run|execute|use (your|the) (code )?(interpreter|python tool|tool)|in your (python "
        r"tool|sandbox|runtime|container)|your (sandbox|runtime|container|environment)|"
        r"(escape|break out of|bypass) (the |your |this )?(sandbox|container))\b",
        r"(rm -rf|fork bomb|:\(\)\{|/etc/shadow|/etc/passwd|reverse shell|crypto ?miner|"
        r"\bmine (monero|bitcoin|crypto)|environment variables|api keys|internal network|"
        r"open port|memory forever|until (your|the) container crashes|million requests|run it "
        r"as root|sandbox|container|os\.system)",
        unless=r"\b(protect|prevent|what is|what does|explain|detect|my own|defend|never run)\b",
        score=0.6,
    ),
)

RULES: Final[tuple[Rule, ...]] = (
    *_CORE,
    # Means of self-harm said of oneself, with a second sign: intent, finality or fear.
    _rule(
        "suicide_self_harm",
        "pill overdos bridge rope noose razor blade wrist track wall tallest highest bleed "
        "cut scratch burn monoxide tylenol sleeping wall tree truck",
        r"\b(pills|overdos\w*|bridge|rope|noose|razors?|blades?|wrists|train tracks|into a "
        r"(wall|tree|truck)|tallest|highest|bleed\w*|cutting|scratching|burning myself|carbon "
        r"monoxide|tylenol|sleeping pills)\b",
        _I,
        r"\b(want|wanna|gonna|going to|plan\w*|thinking about|keep thinking|saving|saved|took|"
        r"taking|scared|anyway|again|clean|nobody|no one|miss me|goodbye|bye|enough to|"
        r"only thing|tonight|end|over|die|dead|worth)\b",
        unless=_ABOUT_OTHERS + r"|\b(safely|safe dose|side effects?|recipe|build|design|"
        r"engineer\w*|my (dog|cat)|vet|how do (bridges|i fix))\b",
        score=0.85,
    ),
    # Farewells and the world without oneself.
    _rule(
        "suicide_self_harm",
        "goodbye bye letter note need going notic miss care fine better happier point plan "
        "wake painless disappear",
        r"\b(this is (my )?goodbye|(wrote|writing|written) (\w+ )?(letters|notes|a letter|a note)"
        r" (to|for) my|won'?t need (any of )?(it|this|them|my \w+)|wont need (any of )?(it|this|"
        r"them|my \w+)|where i'?m going|where im going|(would|will) (anyone|anybody|people|they)"
        r" (even )?(notice|care|miss)|(nobody|no one|noone) (is gonna|is going to|will|would)"
        r" (even )?(miss|notice|care)|(fine|better|happier) (off )?without me|(see|see any) "
        r"(the )?point any ?more|my plan is (set|ready|done)|(wish|hope|pray)\b.{0,30}\b(not|"
        r"never|don'?t|do not) wake up|painless way to go|if i disappeared)\b",
        unless=r"\b(novel|story|character|film|movie|song|lyrics|game|moving|new job|"
        r"vacation|trip|holiday|retire\w*|my (friend|son|daughter|kid|partner|student|"
        r"patient))\b",
        score=0.85,
    ),
    # Harm to others: intent in other words.
    _rule(
        "harm_to_others",
        "fantas thinking imagin pictur almost might regret joke coming catch real bring scare",
        r"\b(fantasi[sz]\w* about|thinking (seriously )?about|keep (imagining|picturing|"
        r"thinking about)|almost did it|might actually do it|(he|she|they)'?ll regret|"
        r"(he|she|they) will regret|no joke|(he'?s|she'?s|they'?ve|hes|shes) got it coming|"
        r"next time i (catch|see)|for real|bringing (something|my boys|a gun|my \w+'?s? gun)|"
        r"scare (her|him|them))\b",
        r"\b(push\w*|putting something in|put something in|break\w* (his|her|their) \w+|"
        r"jump (that|this|the) (guy|girl|kid|dude)|(take|bring\w*) (a|my|my \w+'?s?) gun to|"
        r"hurt\w*|kill\w*|stab\w*|shoot\w*|poison\w*|beat\w*|bringing something|regret it|"
        r"scare (her|him|them))\b",
        _PERSON + r"|\b(to work|to school)\b",
        unless=_JOKING + r"|\b(push notifications?|git push|push (the|my) (code|changes|"
        r"branch|button)|thinking about (a|the) (story|plot|character))\b",
        score=0.9,
    ),
    _rule(
        "terror",
        "drive driving ram plow truck car van vehicl glorif prais recruit fighter casualt",
        r"\b((drive|driving|ram|ramming|plow|plough) (a |my |the )?(truck|car|van|vehicle) "
        r"into (a |the )?crowd|(glorif\w*|prais\w*) (the )?\w+ (shooter|bomber|attack\w*)|"
        r"recruit\w* (post|message|video)s? for (our|the|a) (cell|group|militia)|"
        r"we need fighters|(get|cause|have) the most casualties)\b",
        unless=_TALK_ABOUT,
        score=0.9,
    ),
    _rule(
        "terror",
        "shoot",
        r"\b(shoot|shooting) up (a|the|my) (school|church|mosque|synagogue|mall|concert|office)\b",
        unless=_TALK_ABOUT,
        score=0.9,
    ),
    _rule(
        "privacy",
        "dox doxx social secur",
        r"\b(dox\w*|social security numbers?)\b",
        unless=r"\b(what is|protect\w*|prevent\w*|my own|am i being|i was|i got)\b",
        score=0.6,
    ),
    _rule(
        "defamation",
        "spread rumor rumour lie",
        r"\bspread(ing)? (a |some )?(rumou?rs?|lies)\b",
        unless=r"\b(how (do|can|should) i (deal|respond|stop|handle)|someone is)\b",
        score=0.7,
    ),
)

# Categories that can lead to an end: for these a request for operations (step by step, a
# recipe) undoes a safe context such as fiction; for the others a safe context always wins.
ENDABLE: Final = frozenset({"child_sexual_exploitation", "indiscriminate_weapons", "terror"})
