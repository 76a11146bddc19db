"""What analysts' SQL may call: an explicit list of pure functions, and of table functions that only generate rows.

The check (dashboard/sql_check.py) refuses every function, table function and function-naming identifier that is not
listed here, whatever ClickHouse version runs the query: a function a newer ClickHouse adds is refused until it is
added to this file by hand. The lists were taken from ClickHouse 26.9's `system.functions` by category (the categories
named below), then read one by one; nothing that reads or writes files, reaches the network, runs processes, sleeps,
reads dictionaries or reports on the host is listed. Aliases (`system.functions.alias_to`) and aggregate combinators
(`sumIf`, `uniqMerge`, ...; COMBINATORS below) resolve to a listed name or are refused.
"""

from __future__ import annotations

#: ClickHouse category 'Arithmetic'
ARITHMETIC = frozenset(
    """
    abs avg2 byteSwap divide divideDecimal divideOrNull gcd ifNotFinite intDiv intDivOrNull intDivOrZero isFinite
    isInfinite isNaN kqlBin kqlBinAt kqlDateTimeBinAt kqlDivide kqlMultiply kqlRangeCount lcm max2 midpoint min2
    minus modulo moduloLegacy moduloOrNull moduloOrZero multiply multiplyDecimal negate plus positiveModulo
    positiveModuloOrNull sqr
    """.split()
)

#: ClickHouse category 'Comparison'
COMPARISON = frozenset(
    """
    equals globalIn globalInIgnoreSet globalNotIn globalNotInIgnoreSet globalNotNullIn globalNotNullInIgnoreSet
    globalNullIn globalNullInIgnoreSet greater greaterOrEquals in inIgnoreSet isDistinctFrom isNotDistinctFrom less
    lessOrEquals notEquals notIn notInIgnoreSet notNullIn notNullInIgnoreSet nullIn nullInIgnoreSet
    """.split()
)

#: ClickHouse category 'Logical'
LOGICAL = frozenset(
    """
    and not or xor
    """.split()
)

#: ClickHouse category 'Conditional'
CONDITIONAL = frozenset(
    """
    clamp greatest if least multiIf
    """.split()
)

#: ClickHouse category 'Null'
NULLS = frozenset(
    """
    assumeNotNull coalesce firstNonDefault ifNull isNotNull isNull isNullable isZeroOrNull nullIf toNullable
    """.split()
)

#: ClickHouse category 'Mathematical'
MATHEMATICAL = frozenset(
    """
    acos acosh asin asinh atan atan2 atanh cbrt cos cosh degrees e erf erfc exp exp10 exp2 factorial hypot intExp10
    intExp2 isPrime isProbablePrime lgamma log log10 log1p log2 pi pow proportionsZTest radians sigmoid sign sin
    sinh sqrt tan tanh tgamma widthBucket
    """.split()
)

#: ClickHouse category 'Rounding'
ROUNDING = frozenset(
    """
    ceil floor round roundAge roundBankers roundDown roundDuration roundToExp2 trunc
    """.split()
)

#: ClickHouse category 'Bit'
BITS = frozenset(
    """
    bitAnd bitCount bitHammingDistance bitNot bitOr bitRotateLeft bitRotateRight bitShiftLeft bitShiftRight bitSlice
    bitTest bitTestAll bitTestAny bitXor
    """.split()
)

#: ClickHouse category 'String'
STRINGS = frozenset(
    """
    CRC32 CRC32IEEE CRC64 appendTrailingCharIfAbsent ascii base32Decode base32Encode base58Decode base58Encode
    base64Decode base64Encode base64URLDecode base64URLEncode basename byteHammingDistance caseFoldUTF8 chdb
    compareSubstrings concat concatAssumeInjective concatWithSeparator concatWithSeparatorAssumeInjective conv
    convertCharset damerauLevenshteinDistance decodeHTMLComponent decodeXMLComponent editDistance editDistanceUTF8
    encodeXMLComponent endsWith endsWithCaseInsensitive endsWithCaseInsensitiveUTF8 endsWithUTF8 extractTextFromHTML
    firstLine initcap initcapUTF8 isValidASCII isValidUTF8 jaroSimilarity jaroWinklerSimilarity left leftPad
    leftPadUTF8 leftUTF8 lengthUTF8 lower lowerUTF8 naturalSortKey normalizeUTF8NFC normalizeUTF8NFD
    normalizeUTF8NFKC normalizeUTF8NFKCCasefold normalizeUTF8NFKD regexpExtract regexpPosition removeDiacriticsUTF8
    repeat reverseUTF8 right rightPad rightPadUTF8 rightUTF8 soundex space sparseGrams sparseGramsHashes
    sparseGramsHashesUTF8 sparseGramsUTF8 startsWith startsWithCaseInsensitive startsWithCaseInsensitiveUTF8
    startsWithUTF8 stringBytesEntropy stringBytesUniq stringJaccardIndex stringJaccardIndexUTF8 substring
    substringIndex substringIndexUTF8 substringUTF8 toValidUTF8 trimBoth trimLeft trimRight tryBase32Decode
    tryBase58Decode tryBase64Decode tryBase64URLDecode upper upperUTF8
    """.split()
)

#: ClickHouse category 'String Search'
STRING_SEARCH = frozenset(
    """
    countMatches countMatchesCaseInsensitive countSubstrings countSubstringsCaseInsensitive
    countSubstringsCaseInsensitiveUTF8 extract extractAll extractAllGroupsHorizontal extractGroups hasAllTokens
    hasAnyTokens hasPhrase hasSubsequence hasSubsequenceCaseInsensitive hasSubsequenceCaseInsensitiveUTF8
    hasSubsequenceUTF8 hasToken hasTokenCaseInsensitive hasTokenCaseInsensitiveOrNull hasTokenOrNull highlight ilike
    like locate match matchCaseInsensitive multiFuzzyMatchAllIndices multiFuzzyMatchAny multiFuzzyMatchAnyIndex
    multiMatchAllIndices multiMatchAny multiMatchAnyIndex multiSearchAllPositions
    multiSearchAllPositionsCaseInsensitive multiSearchAllPositionsCaseInsensitiveUTF8 multiSearchAllPositionsUTF8
    multiSearchAny multiSearchAnyCaseInsensitive multiSearchAnyCaseInsensitiveUTF8 multiSearchAnyUTF8
    multiSearchFirstIndex multiSearchFirstIndexCaseInsensitive multiSearchFirstIndexCaseInsensitiveUTF8
    multiSearchFirstIndexUTF8 multiSearchFirstPosition multiSearchFirstPositionCaseInsensitive
    multiSearchFirstPositionCaseInsensitiveUTF8 multiSearchFirstPositionUTF8 ngramDistance
    ngramDistanceCaseInsensitive ngramDistanceCaseInsensitiveUTF8 ngramDistanceUTF8 ngramSearch
    ngramSearchCaseInsensitive ngramSearchCaseInsensitiveUTF8 ngramSearchUTF8 notILike notLike notMatch
    notMatchCaseInsensitive position positionCaseInsensitive positionCaseInsensitiveUTF8 positionUTF8
    """.split()
)

#: ClickHouse category 'String Splitting'
STRING_SPLITTING = frozenset(
    """
    alphaTokens arrayStringConcat extractAllGroupsVertical naiveBayesNgrams ngrams reverseBySeparator splitByChar
    splitByNonAlpha splitByRegexp splitByString splitByWhitespace tokens tokensForLikePattern
    """.split()
)

#: ClickHouse category 'String Replacement'
STRING_REPLACEMENT = frozenset(
    """
    format overlay overlayUTF8 printf regexpQuoteMeta replaceAll replaceOne replaceRegexpAll replaceRegexpOne
    translate translateUTF8
    """.split()
)

#: ClickHouse category 'Encoding'
ENCODING = frozenset(
    """
    bin bitPositionsToArray bitmaskToArray bitmaskToList char hex hilbertDecode hilbertEncode mortonDecode
    mortonEncode sqidDecode sqidEncode unbin unhex
    """.split()
)

#: ClickHouse category 'Dates and Times'
DATES_AND_TIMES = frozenset(
    """
    UTCTimestamp YYYYMMDDToDate YYYYMMDDToDate32 YYYYMMDDhhmmssToDateTime YYYYMMDDhhmmssToDateTime64 addDate addDays
    addHours addInterval addMicroseconds addMilliseconds addMinutes addMonths addNanoseconds addQuarters addSeconds
    addTupleOfIntervals addWeeks addYears age changeDay changeHour changeMinute changeMonth changeSecond changeYear
    dateDiff dateName dateTrunc formatDateTime formatDateTimeInJodaSyntax fromDaysSinceYearZero
    fromDaysSinceYearZero32 fromModifiedJulianDay fromModifiedJulianDayOrNull fromUTCTimestamp fromUnixTimestamp
    fromUnixTimestampInJodaSyntax localtime makeDate makeDate32 makeDateTime makeDateTime64 monthName now now64
    nowInBlock nowInBlock64 serverTimezone subDate subtractDays subtractHours subtractInterval subtractMicroseconds
    subtractMilliseconds subtractMinutes subtractMonths subtractNanoseconds subtractQuarters subtractSeconds
    subtractTupleOfIntervals subtractWeeks subtractYears timeDiff timeSlot timeSlots timestamp timezone timezoneOf
    timezoneOffset toDayOfMonth toDayOfWeek toDayOfYear toDaysInMonth toDaysSinceYearZero toHour toISOWeek toISOYear
    toLastDayOfMonth toLastDayOfWeek toMicrosecond toMillisecond toMinute toModifiedJulianDay
    toModifiedJulianDayOrNull toMonday toMonth toMonthNumSinceEpoch toNanosecond toQuarter toRelativeDayNum
    toRelativeHourNum toRelativeMinuteNum toRelativeMonthNum toRelativeQuarterNum toRelativeSecondNum
    toRelativeWeekNum toRelativeYearNum toSecond toStartOfDay toStartOfFifteenMinutes toStartOfFiveMinutes
    toStartOfHour toStartOfISOYear toStartOfInterval toStartOfMicrosecond toStartOfMillisecond toStartOfMinute
    toStartOfMonth toStartOfNanosecond toStartOfQuarter toStartOfSecond toStartOfTenMinutes toStartOfWeek
    toStartOfYear toTimeWithFixedDate toTimezone toUTCTimestamp toUnixTimestamp toWeek toYYYYMM toYYYYMMDD
    toYYYYMMDDhhmmss toYear toYearNumSinceEpoch toYearWeek today yesterday
    """.split()
)

#: ClickHouse category 'Arrays'
ARRAYS = frozenset(
    """
    array arrayAUCPR arrayAll arrayAutocorrelation arrayAvg arrayBottomK arrayCompact arrayConcat arrayCount
    arrayCumSum arrayCumSumNonNegative arrayDifference arrayDistinct arrayDotProduct arrayElement arrayElementOrNull
    arrayEnumerate arrayEnumerateDense arrayEnumerateDenseRanked arrayEnumerateUniq arrayEnumerateUniqRanked
    arrayExcept arrayExists arrayFill arrayFilter arrayFirst arrayFirstIndex arrayFirstOrNull arrayFlatten
    arrayFlattenedLength arrayFold arrayIntersect arrayJaccardIndex arrayJoin arrayLast arrayLastIndex
    arrayLastOrNull arrayLevenshteinDistance arrayLevenshteinDistanceWeighted arrayMap arrayMax arrayMin
    arrayNormalizedGini arrayPartialReverseSort arrayPartialShuffle arrayPartialSort arrayPopBack arrayPopFront
    arrayProduct arrayPushBack arrayPushFront arrayROCAUC arrayRandomSample arrayReduce arrayReduceInRanges
    arrayRemove arrayResize arrayReverse arrayReverseFill arrayReverseSort arrayReverseSplit arrayRotateLeft
    arrayRotateRight arrayShiftLeft arrayShiftRight arrayShingles arrayShuffle arraySimilarity arraySlice arraySort
    arraySplit arraySum arraySymmetricDifference arrayTopK arrayTranspose arrayUnion arrayUniq arrayWithConstant
    arrayZip arrayZipUnaligned countEqual empty emptyArrayDate emptyArrayDateTime emptyArrayFloat32
    emptyArrayFloat64 emptyArrayInt16 emptyArrayInt32 emptyArrayInt64 emptyArrayInt8 emptyArrayString
    emptyArrayToSingle emptyArrayUInt16 emptyArrayUInt32 emptyArrayUInt64 emptyArrayUInt8 has hasAll hasAny
    hasSubstr indexOf indexOfAssumeSorted length notEmpty notHas randomHadamardTransform range replicate reverse
    """.split()
)

#: ClickHouse category 'Map'
MAPS = frozenset(
    """
    extractKeyValuePairs extractKeyValuePairsWithEscaping map mapAdd mapAll mapApply mapConcat mapContainsKey
    mapContainsKeyLike mapContainsValue mapContainsValueLike mapExists mapExtractKeyLike mapExtractValueLike
    mapFilter mapFromArrays mapKeys mapPartialReverseSort mapPartialSort mapPopulateSeries mapReverseSort mapSort
    mapSubtract mapUpdate mapValues
    """.split()
)

#: ClickHouse category 'Tuple'
TUPLES = frozenset(
    """
    dotProduct flattenTuple tuple tupleConcat tupleDivide tupleDivideByNumber tupleElement tupleHammingDistance
    tupleIntDiv tupleIntDivByNumber tupleIntDivOrZero tupleIntDivOrZeroByNumber tupleMinus tupleModulo
    tupleModuloByNumber tupleMultiply tupleMultiplyByNumber tupleNames tupleNegate tuplePlus
    tuplePositiveModuloByNumber tupleToNameValuePairs
    """.split()
)

#: ClickHouse category 'JSON'
JSON = frozenset(
    """
    JSONAllPaths JSONAllPathsWithTypes JSONAllValues JSONArrayLength JSONDynamicPaths JSONDynamicPathsWithTypes
    JSONExtract JSONExtractArrayRaw JSONExtractArrayRawCaseInsensitive JSONExtractBool
    JSONExtractBoolCaseInsensitive JSONExtractCaseInsensitive JSONExtractFloat JSONExtractFloatCaseInsensitive
    JSONExtractInt JSONExtractIntCaseInsensitive JSONExtractKeys JSONExtractKeysAndValues
    JSONExtractKeysAndValuesCaseInsensitive JSONExtractKeysAndValuesRaw JSONExtractKeysAndValuesRawCaseInsensitive
    JSONExtractKeysCaseInsensitive JSONExtractRaw JSONExtractRawCaseInsensitive JSONExtractString
    JSONExtractStringCaseInsensitive JSONExtractUInt JSONExtractUIntCaseInsensitive JSONHas JSONKey JSONLength
    JSONMergePatch JSONSharedDataPaths JSONSharedDataPathsWithTypes JSONType JSON_EXISTS JSON_QUERY JSON_VALUE
    dynamicElement dynamicType isDynamicElementInSharedData isValidJSON prettyPrintJSON simpleJSONExtractBool
    simpleJSONExtractFloat simpleJSONExtractInt simpleJSONExtractRaw simpleJSONExtractString simpleJSONExtractUInt
    simpleJSONHas toJSONString
    """.split()
)

#: ClickHouse category 'Type Conversion'
TYPE_CONVERSION = frozenset(
    """
    CAST DATE accurateCast accurateCastOrDefault accurateCastOrNull formatRow formatRowNoNewline
    fromUnixTimestamp64Micro fromUnixTimestamp64Milli fromUnixTimestamp64Nano fromUnixTimestamp64Second
    kqlParameterCast kqlToTimespan parseDateTime parseDateTime32BestEffort parseDateTime32BestEffortOrNull
    parseDateTime32BestEffortOrZero parseDateTime64 parseDateTime64BestEffort parseDateTime64BestEffortOrNull
    parseDateTime64BestEffortOrZero parseDateTime64BestEffortUS parseDateTime64BestEffortUSOrNull
    parseDateTime64BestEffortUSOrZero parseDateTime64InJodaSyntax parseDateTime64InJodaSyntaxOrNull
    parseDateTime64InJodaSyntaxOrZero parseDateTime64OrNull parseDateTime64OrZero parseDateTimeBestEffort
    parseDateTimeBestEffortOrNull parseDateTimeBestEffortOrZero parseDateTimeBestEffortUS
    parseDateTimeBestEffortUSOrNull parseDateTimeBestEffortUSOrZero parseDateTimeInJodaSyntax
    parseDateTimeInJodaSyntaxOrNull parseDateTimeInJodaSyntaxOrZero parseDateTimeOrNull parseDateTimeOrZero
    reinterpret reinterpretAsDate reinterpretAsDateTime reinterpretAsFixedString reinterpretAsFloat32
    reinterpretAsFloat64 reinterpretAsInt128 reinterpretAsInt16 reinterpretAsInt256 reinterpretAsInt32
    reinterpretAsInt64 reinterpretAsInt8 reinterpretAsString reinterpretAsUInt128 reinterpretAsUInt16
    reinterpretAsUInt256 reinterpretAsUInt32 reinterpretAsUInt64 reinterpretAsUInt8 reinterpretAsUUID toBFloat16
    toBFloat16OrNull toBFloat16OrZero toBool toDate toDate32 toDate32OrDefault toDate32OrNull toDate32OrZero
    toDateOrDefault toDateOrNull toDateOrZero toDateTime toDateTime32 toDateTime64 toDateTime64OrDefault
    toDateTime64OrNull toDateTime64OrZero toDateTimeOrDefault toDateTimeOrNull toDateTimeOrZero toDecimal128
    toDecimal128OrDefault toDecimal128OrNull toDecimal128OrZero toDecimal256 toDecimal256OrDefault
    toDecimal256OrNull toDecimal256OrZero toDecimal32 toDecimal32OrDefault toDecimal32OrNull toDecimal32OrZero
    toDecimal64 toDecimal64OrDefault toDecimal64OrNull toDecimal64OrZero toDecimalString toFixedString toFloat32
    toFloat32OrDefault toFloat32OrNull toFloat32OrZero toFloat64 toFloat64OrDefault toFloat64OrNull toFloat64OrZero
    toInt128 toInt128OrDefault toInt128OrNull toInt128OrZero toInt16 toInt16OrDefault toInt16OrNull toInt16OrZero
    toInt256 toInt256OrDefault toInt256OrNull toInt256OrZero toInt32 toInt32OrDefault toInt32OrNull toInt32OrZero
    toInt64 toInt64OrDefault toInt64OrNull toInt64OrZero toInt8 toInt8OrDefault toInt8OrNull toInt8OrZero toInterval
    toIntervalDay toIntervalHour toIntervalMicrosecond toIntervalMillisecond toIntervalMinute toIntervalMonth
    toIntervalNanosecond toIntervalQuarter toIntervalSecond toIntervalWeek toIntervalYear toLowCardinality toString
    toStringCutToZero toTime toTime64 toTime64OrNull toTime64OrZero toTimeOrNull toTimeOrZero toUInt128
    toUInt128OrDefault toUInt128OrNull toUInt128OrZero toUInt16 toUInt16OrDefault toUInt16OrNull toUInt16OrZero
    toUInt256 toUInt256OrDefault toUInt256OrNull toUInt256OrZero toUInt32 toUInt32OrDefault toUInt32OrNull
    toUInt32OrZero toUInt64 toUInt64OrDefault toUInt64OrNull toUInt64OrZero toUInt8 toUInt8OrDefault toUInt8OrNull
    toUInt8OrZero toUUID toUUIDOrZero toUnixTimestamp64Micro toUnixTimestamp64Milli toUnixTimestamp64Nano
    toUnixTimestamp64Second
    """.split()
)

#: ClickHouse category 'Hash'
HASHES = frozenset(
    """
    MD4 MD5 RIPEMD160 SHA1 SHA224 SHA256 SHA384 SHA512 SHA512_256 URLHash cityHash64 farmFingerprint64 farmHash64
    gccMurmurHash halfMD5 hiveHash icebergHash intHash32 intHash64 javaHash javaHashUTF16LE jumpConsistentHash
    kafkaMurmurHash keccak256 kostikConsistentHash metroHash64 murmurHash2_32 murmurHash2_64 murmurHash3_128
    murmurHash3_32 murmurHash3_64 ngramMinHash ngramMinHashArg ngramMinHashArgCaseInsensitive
    ngramMinHashArgCaseInsensitiveUTF8 ngramMinHashArgUTF8 ngramMinHashCaseInsensitive
    ngramMinHashCaseInsensitiveUTF8 ngramMinHashUTF8 ngramSimHash ngramSimHashCaseInsensitive
    ngramSimHashCaseInsensitiveUTF8 ngramSimHashUTF8 sipHash128 sipHash128Keyed sipHash128Reference
    sipHash128ReferenceKeyed sipHash64 sipHash64Keyed wordShingleMinHash wordShingleMinHashArg
    wordShingleMinHashArgCaseInsensitive wordShingleMinHashArgCaseInsensitiveUTF8 wordShingleMinHashArgUTF8
    wordShingleMinHashCaseInsensitive wordShingleMinHashCaseInsensitiveUTF8 wordShingleMinHashUTF8
    wordShingleSimHash wordShingleSimHashCaseInsensitive wordShingleSimHashCaseInsensitiveUTF8
    wordShingleSimHashUTF8 wyHash64 xxHash32 xxHash64 xxHash64Spark xxh3 xxh3_128
    """.split()
)

#: ClickHouse category 'UUID'
UUIDS = frozenset(
    """
    UUIDNumToString UUIDStringToNum UUIDToNum UUIDv7ToDateTime dateTime64ToSnowflakeID dateTimeToSnowflakeID
    dateTimeToUUIDv7 generateSnowflakeID generateUUIDv4 generateUUIDv7 snowflakeIDToDateTime snowflakeIDToDateTime64
    toUUIDOrDefault toUUIDOrNull
    """.split()
)

#: ClickHouse category 'URL'
URLS = frozenset(
    """
    URLHierarchy URLPathHierarchy cutFragment cutQueryString cutQueryStringAndFragment
    cutToFirstSignificantSubdomain cutToFirstSignificantSubdomainCustom cutToFirstSignificantSubdomainCustomRFC
    cutToFirstSignificantSubdomainCustomWithWWW cutToFirstSignificantSubdomainCustomWithWWWRFC
    cutToFirstSignificantSubdomainRFC cutToFirstSignificantSubdomainWithWWW cutToFirstSignificantSubdomainWithWWWRFC
    cutURLParameter cutWWW decodeURLComponent decodeURLFormComponent domain domainRFC domainWithoutWWW
    domainWithoutWWWRFC encodeURLComponent encodeURLFormComponent extractURLParameter extractURLParameterNames
    extractURLParameters firstSignificantSubdomain firstSignificantSubdomainCustom
    firstSignificantSubdomainCustomRFC firstSignificantSubdomainRFC fragment netloc path pathFull port portRFC
    protocol queryString queryStringAndFragment topLevelDomain topLevelDomainRFC
    """.split()
)

#: ClickHouse category 'IP Address'
IP_ADDRESSES = frozenset(
    """
    IPv4CIDRToRange IPv4NumToString IPv4NumToStringClassC IPv4StringToNum IPv4StringToNumOrDefault
    IPv4StringToNumOrNull IPv4ToIPv6 IPv6CIDRToRange IPv6NumToString IPv6StringToNum IPv6StringToNumOrDefault
    IPv6StringToNumOrNull cutIPv6 isIPAddressInRange isIPv4String isIPv6String toIPv4 toIPv4OrDefault toIPv4OrNull
    toIPv4OrZero toIPv6 toIPv6OrDefault toIPv6OrNull toIPv6OrZero
    """.split()
)

#: ClickHouse category 'Distance'
DISTANCES = frozenset(
    """
    L1Distance L1Norm L1Normalize L2Distance L2DistanceTransposed L2DistanceTransposedQuantized L2Norm L2Normalize
    L2SquaredDistance L2SquaredNorm LinfDistance LinfNorm LinfNormalize LpDistance LpNorm LpNormalize cosineDistance
    cosineDistanceTransposed cosineDistanceTransposedQuantized dotProductTransposed dotProductTransposedQuantized
    """.split()
)

#: ClickHouse category 'Time Window'
TIME_WINDOWS = frozenset(
    """
    hop hopEnd hopStart tumble tumbleEnd tumbleStart
    """.split()
)

#: ClickHouse category 'Random Number'
RANDOM = frozenset(
    """
    fuzzBits rand rand64 randBernoulli randBinomial randCanonical randChiSquared randConstant randExponential
    randFisherF randLogNormal randNegativeBinomial randNormal randPoisson randStudentT randUniform randomFixedString
    randomPrintableASCII randomString randomStringUTF8
    """.split()
)

#: ClickHouse category 'Aggregate Functions'
AGGREGATE = frozenset(
    """
    aggThrow analysisOfVariance any anyHeavy anyLast anyLast_respect_nulls any_respect_nulls approx_top_k
    approx_top_sum argAndMax argAndMin argMax argMin avg avgWeighted boundingRatio categoricalInformationValue
    contingency corr corrMatrix corrStable count covarPop covarPopMatrix covarPopStable covarSamp covarSampMatrix
    covarSampStable cramersV cramersVBiasCorrected cume_dist deltaSum deltaSumTimestamp denseRank
    distinctDynamicTypes distinctJSONPaths distinctJSONPathsAndTypes entropy estimateCompressionRatio
    exponentialMovingAverage exponentialTimeDecayedAvg exponentialTimeDecayedCount exponentialTimeDecayedMax
    exponentialTimeDecayedSum flameGraph gini groupArray groupArrayInsertAt groupArrayIntersect groupArrayLast
    groupArrayMovingAvg groupArrayMovingSum groupArraySample groupArraySorted groupBitAnd groupBitOr groupBitXor
    groupBitmap groupBitmapAnd groupBitmapOr groupBitmapXor groupConcat groupFormat groupNumericIndexedVector
    groupUniqArray histogram intervalLengthSum kolmogorovSmirnovTest kurtPop kurtSamp lag lagInFrame
    largestTriangleThreeBuckets lead leadInFrame mannWhitneyUTest max maxIntersections maxIntersectionsPosition
    maxMappedArrays meanZTest mergedJSONPatch min minMappedArrays nonNegativeDerivative nothing nothingNull
    nothingUInt64 nth_value ntile percentRank quantile quantileBFloat16 quantileBFloat16Weighted quantileDD
    quantileDeterministic quantileExact quantileExactExclusive quantileExactHigh quantileExactInclusive
    quantileExactLow quantileExactWeighted quantileExactWeightedInterpolated quantileGK quantileInterpolatedWeighted
    quantilePrometheusHistogram quantileTDigest quantileTDigestWeighted quantileTiming quantileTimingWeighted
    quantiles quantilesBFloat16 quantilesBFloat16Weighted quantilesDD quantilesDeterministic quantilesExact
    quantilesExactExclusive quantilesExactHigh quantilesExactInclusive quantilesExactLow quantilesExactWeighted
    quantilesExactWeightedInterpolated quantilesGK quantilesInterpolatedWeighted quantilesPrometheusHistogram
    quantilesTDigest quantilesTDigestWeighted quantilesTiming quantilesTimingWeighted rank rankCorr regr_avgx
    regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy retention row_number
    sequenceCount sequenceMatch sequenceMatchEvents sequenceNextNode simpleLinearRegression singleValueOrNull
    skewPop skewSamp sparkbar stddevPop stddevPopStable stddevSamp stddevSampStable studentTTest
    studentTTestOneSample sum sumCount sumKahan sumMapFiltered sumMapFilteredWithOverflow sumMapWithOverflow
    sumMappedArrays sumWithOverflow theilsU timeSeriesAvgToGrid timeSeriesBottomKMasks timeSeriesChangesToGrid
    timeSeriesCountToGrid timeSeriesDeltaToGrid timeSeriesDerivToGrid timeSeriesGroupArray timeSeriesIncreaseToGrid
    timeSeriesInstantDeltaToGrid timeSeriesInstantRateToGrid timeSeriesLastTwoSamples timeSeriesLimitKMasks
    timeSeriesMaxToGrid timeSeriesMinToGrid timeSeriesPredictLinearToGrid timeSeriesRateToGrid
    timeSeriesResampleToGridWithStaleness timeSeriesResetsToGrid timeSeriesSumToGrid timeSeriesTimestampOfMaxToGrid
    timeSeriesTimestampOfMinToGrid timeSeriesTopKMasks topK topKWeighted uniq uniqCombined uniqCombined64 uniqExact
    uniqHLL12 uniqUpTo varPop varPopStable varSamp varSampStable welchTTest windowFunnel
    """.split()
)

#: ClickHouse category 'Other (chosen one by one)'
OTHER = frozenset(
    """
    assumeNotNull bar byteSize countDigits currentDatabase defaultValueOfArgumentType defaultValueOfTypeName
    dumpColumnStructure errorCodeToName finalizeAggregation formatReadableDecimalSize formatReadableQuantity
    formatReadableSize formatReadableTimeDelta getSubcolumn identity ignore indexHint initializeAggregation
    isConstant isDecimalOverflow materialize neighbor parseISO8601Duration parseReadableSize parseReadableSizeOrNull
    parseReadableSizeOrZero parseTimeDelta runningAccumulate runningDifference
    runningDifferenceStartingWithFirstValue throwIf toColumnTypeName toTypeName transform variantElement variantType
    version visibleWidth
    """.split()
)

#: Aggregate function combinators (system.aggregate_function_combinators): each only reshapes its aggregate.
COMBINATORS = frozenset(
    "If Array Map ForEach Distinct OrDefault OrNull Resample State SimpleState Merge MergeState ArgMin ArgMax Null Tuple".split()
)

#: Table functions that only generate rows (FROM numbers(10), ...); every other table function reads or writes
#: somewhere (file, url, s3, remote, mysql, executable, python, merge, dictionary, ...) and is refused. The
#: database's own parameterized views are called like table functions too: dashboard/sql_check.py allows those.
TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "values"}
)


#: Left out of the categories above: their work on ONE row grows faster than its input (edit distances: length x
#: length; arrayFold: a lambda per element), and ClickHouse checks its time limit and KILL only between blocks of rows,
#: so one such row could run for hours (an outside test ran levenshteinDistance on 65,536-character strings: 5.5 s
#: a row, a query still running at 72 s against a 30 s limit, past its client's hang-up).
SUPERLINEAR_PER_ROW = frozenset(
    """
    editDistance editDistanceUTF8 damerauLevenshteinDistance jaroSimilarity jaroWinklerSimilarity
    arrayLevenshteinDistance arrayLevenshteinDistanceWeighted arraySimilarity arrayFold
    """.split()
)

#: Every ordinary or aggregate function an analyst may call, by its canonical name.
FUNCTIONS: frozenset[str] = (
    frozenset().union(
        ARITHMETIC,
        COMPARISON,
        LOGICAL,
        CONDITIONAL,
        NULLS,
        MATHEMATICAL,
        ROUNDING,
        BITS,
        STRINGS,
        STRING_SEARCH,
        STRING_SPLITTING,
        STRING_REPLACEMENT,
        ENCODING,
        DATES_AND_TIMES,
        ARRAYS,
        MAPS,
        TUPLES,
        JSON,
        TYPE_CONVERSION,
        HASHES,
        UUIDS,
        URLS,
        IP_ADDRESSES,
        DISTANCES,
        TIME_WINDOWS,
        RANDOM,
        AGGREGATE,
        OTHER,
    )
    - SUPERLINEAR_PER_ROW
)
